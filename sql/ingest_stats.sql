-- ingest_stats: every event read so far and what was dropped, per source format,
-- summed over the ledger of ingested files.
SELECT
    format AS source_format,
    sum(events_read) AS events_read,
    sum(dropped_duplicate) AS dropped_duplicate,
    sum(dropped_corrupt) AS dropped_corrupt,
    sum(events_kept) AS events_kept
FROM ingested_files
GROUP BY format
ORDER BY format
