-- holdout_sessions: the sessions the evaluation counts differently from the
-- published lists, whose training ends at $until: those with events at or after
-- it, and, with a look-back window, those with events in the days the
-- evaluation's window reaches back to and the published one no longer does
-- ($window_from to $window_to; both NULL without a window).
SELECT tenant, session_id FROM events WHERE ts >= CAST($until AS TIMESTAMP)
UNION
SELECT tenant, session_id FROM events
WHERE ts >= CAST($window_from AS TIMESTAMP) AND ts < CAST($window_to AS TIMESTAMP)
