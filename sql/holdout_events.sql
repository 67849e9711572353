-- holdout_events: every event of the sessions the evaluation counts differently
-- (sql/holdout_sessions.sql), which sql/session_items.sql reads twice: as the
-- published lists count them, and as the evaluation's training does.
SELECT e.*
FROM events AS e
SEMI JOIN holdout_sessions AS h ON h.tenant = e.tenant AND h.session_id = e.session_id
