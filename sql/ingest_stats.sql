-- ingest_stats: what the build read and what it dropped, per source format.
SELECT
    source_format,
    count(*) AS events_read,
    count(*) FILTER (WHERE coalesce(is_duplicate, FALSE)) AS dropped_duplicate,
    count(*) FILTER (WHERE coalesce(is_corrupt, FALSE) AND NOT coalesce(is_duplicate, FALSE)) AS dropped_corrupt,
    count(*) FILTER (WHERE NOT coalesce(is_duplicate, FALSE) AND NOT coalesce(is_corrupt, FALSE)) AS events_kept
FROM mapped_events
GROUP BY source_format
ORDER BY source_format
