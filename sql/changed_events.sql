-- changed_events: every event of the sessions counted again (sql/changed_sessions.sql),
-- stored earlier or arriving now, which sql/session_items.sql reads twice: without
-- the arrivals as the last build counted them, and with them as this build counts them.
SELECT e.*, FALSE AS arrived
FROM stored_events AS e
SEMI JOIN changed_sessions AS c ON c.tenant = e.tenant AND c.session_id = e.session_id
UNION ALL
SELECT a.*, TRUE AS arrived
FROM arrived_events AS a
