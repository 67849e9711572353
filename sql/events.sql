-- events: one row per clickstream event that Divolte did not flag.
--
-- Reads `mapped_events`, the raw Avro/Parquet rows already turned into the
-- documented columns by the SQL expressions of the config's [events.mapping].
-- Events flagged duplicate or corrupt are dropped here (ingest_stats counts them).
SELECT
    event_id,
    ts,
    party_id,
    session_id,
    event_type,
    product_id,
    location,
    tenant
FROM mapped_events
WHERE NOT coalesce(is_duplicate, FALSE)
  AND NOT coalesce(is_corrupt, FALSE)
