-- events: one row per clickstream event that Divolte did not flag, with the
-- columns the pipeline reads.
--
-- Reads `mapped_events`: the new event files of one build, already turned
-- into the documented columns by the SQL expressions of the config's
-- [events.mapping]. Events flagged duplicate or corrupt are dropped here
-- (sql/file_counts.sql counts them). Each build writes its rows once, as a
-- Parquet batch beside the warehouse; the `events` view reads every batch.
SELECT
    ts,
    tenant,
    session_id,
    party_id,
    event_type,
    product_id
FROM mapped_events
WHERE NOT coalesce(is_duplicate, FALSE)
  AND NOT coalesce(is_corrupt, FALSE)
