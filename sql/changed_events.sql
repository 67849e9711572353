-- changed_events: every event of the sessions counted again (sql/changed_sessions.sql),
-- stored earlier or arriving now, which sql/session_items.sql reads twice: without
-- the arrivals as the last build counted them, and with them as this build counts them.
--
-- The stored events are read from $since on, the first stored event of any of
-- those sessions (sql/first_changed_event.sql; NULL: none has one): the
-- stored events are in about the order they happened, so the row groups
-- before it are skipped, and the columns of the rest are read only there.
SELECT e.*, FALSE AS arrived
FROM stored_events AS e
SEMI JOIN changed_sessions AS c ON c.tenant = e.tenant AND c.session_id = e.session_id
WHERE e.ts >= CAST($since AS TIMESTAMP)
UNION ALL
SELECT a.*, TRUE AS arrived
FROM arrived_events AS a
