-- build_record: the row a build appends to the `builds` history table.
-- `served_algorithm` is what its snapshot's recommendations route serves by
-- default (with snapshots.gate_algorithm = "auto", the best by the build's
-- evaluation).
SELECT
    CAST($build_id AS VARCHAR) AS build_id,
    CAST($started_at AS TIMESTAMP) AS started_at,
    CAST($finished_at AS TIMESTAMP) AS finished_at,
    CAST($config_path AS VARCHAR) AS config_path,
    CAST($parameters AS JSON) AS parameters,
    CAST($event_files AS BIGINT) AS event_files,
    CAST($events_read AS BIGINT) AS events_read,
    CAST($dropped_duplicate AS BIGINT) AS dropped_duplicate,
    CAST($dropped_corrupt AS BIGINT) AS dropped_corrupt,
    CAST($events_kept AS BIGINT) AS events_kept,
    CAST($itemitem_rows AS BIGINT) AS itemitem_rows,
    CAST($served_algorithm AS VARCHAR) AS served_algorithm,
    CAST($counting AS VARCHAR) AS counting,
    CAST($counting_reason AS VARCHAR) AS counting_reason,
    CAST($newest_event AS TIMESTAMP) AS newest_event,
    CAST($counted_with AS JSON) AS counted_with
