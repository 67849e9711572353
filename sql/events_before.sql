-- events_before: the events of the sessions counted again, as the last build
-- saw them: without those that arrive in this build.
SELECT * EXCLUDE (arrived)
FROM changed_events
WHERE NOT arrived
