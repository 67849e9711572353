-- newest_event: the time of the newest event before $until (NULL: of all),
-- which the look-back window of sql/session_items.sql counts back from.
SELECT max(ts) AS newest
FROM events
WHERE CAST($until AS TIMESTAMP) IS NULL OR ts < CAST($until AS TIMESTAMP)
