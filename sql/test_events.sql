-- test_events: the events of the evaluation's test sessions, those that start
-- at or after the cut-off $cutoff (a session that began before it is neither
-- training nor test). sql/session_items.sql reads them as its `events`, so
-- the test sessions obey the same bot rules as the training sessions, and
-- sql/test_items.sql orders what it keeps.
--
-- A test session has no event before the cut-off, so its events are all
-- among the later ones: only the sessions that began earlier are looked for
-- in the events before it.
WITH later_events AS (
    SELECT *
    FROM events
    WHERE ts >= CAST($cutoff AS TIMESTAMP)
),
later AS (
    SELECT DISTINCT tenant, session_id
    FROM later_events
),
begun_earlier AS (
    SELECT DISTINCT e.tenant, e.session_id
    FROM events AS e
    SEMI JOIN later AS l ON l.tenant = e.tenant AND l.session_id = e.session_id
    WHERE e.ts < CAST($cutoff AS TIMESTAMP)
)
SELECT e.*
FROM later_events AS e
ANTI JOIN begun_earlier AS b ON b.tenant = e.tenant AND b.session_id = e.session_id
