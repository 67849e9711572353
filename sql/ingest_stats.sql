-- ingest_stats: every event read so far and what was dropped, per source format,
-- summed over the ledger of ingested files.
SELECT
    format AS source_format,
    CAST(sum(events_read) AS BIGINT) AS events_read,
    CAST(sum(dropped_duplicate) AS BIGINT) AS dropped_duplicate,
    CAST(sum(dropped_corrupt) AS BIGINT) AS dropped_corrupt,
    CAST(sum(events_kept) AS BIGINT) AS events_kept
FROM ingested_files
GROUP BY format
ORDER BY format
