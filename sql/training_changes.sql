-- training_changes: the sessions whose training counts (the evaluation's
-- counts of the events before its cut-off) may differ from what the last
-- build's evaluation kept:
--
-- * those the build counts again (sql/changed_sessions.sql: arrivals, late
--   files, catalogue changes);
-- * those with events between the last cut-off and this one ($split_from to
--   $split_to), which the training now counts, or no longer counts;
-- * with a look-back window, those with events between where the last
--   training window started and where this one starts ($window_from to
--   $window_to; both NULL without a window).
SELECT tenant, session_id FROM changed_sessions
UNION
SELECT tenant, session_id FROM events
WHERE ts >= CAST($split_from AS TIMESTAMP) AND ts < CAST($split_to AS TIMESTAMP)
UNION
SELECT tenant, session_id FROM events
WHERE ts >= CAST($window_from AS TIMESTAMP) AND ts < CAST($window_to AS TIMESTAMP)
