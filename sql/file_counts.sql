-- file_counts: what each new event file held, for the ledger of ingested files:
-- events read, dropped as duplicate or corrupt, and kept.
SELECT
    source_format,
    filename,
    count(*) AS events_read,
    count(*) FILTER (WHERE coalesce(is_duplicate, FALSE)) AS dropped_duplicate,
    count(*) FILTER (WHERE coalesce(is_corrupt, FALSE) AND NOT coalesce(is_duplicate, FALSE)) AS dropped_corrupt,
    count(*) FILTER (WHERE NOT coalesce(is_duplicate, FALSE) AND NOT coalesce(is_corrupt, FALSE)) AS events_kept
FROM mapped_events
GROUP BY source_format, filename
ORDER BY source_format, filename
