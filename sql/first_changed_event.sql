-- first_changed_event: the time of the first stored event of any session
-- counted again (sql/changed_sessions.sql), from which sql/changed_events.sql
-- reads the stored events; NULL where none of them has a stored event.
--
-- Only the session ids and times are read. Sessions are matched by id alone:
-- another tenant's session of the same id can only make the time earlier,
-- so no event of a changed session is before it.
SELECT min(e.ts) AS since
FROM stored_events AS e
WHERE e.session_id IN (SELECT session_id FROM changed_sessions)
