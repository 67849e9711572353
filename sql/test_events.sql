-- test_events: the events of the evaluation's test sessions, those that start
-- at or after the cut-off $cutoff (a session that began before it is neither
-- training nor test). sql/session_items.sql reads them as its `events`, so
-- the test sessions obey the same bot rules as the training sessions, and
-- sql/test_items.sql orders what it keeps.
WITH later AS (
    SELECT DISTINCT tenant, session_id
    FROM events
    WHERE ts >= CAST($cutoff AS TIMESTAMP)
),
begun_earlier AS (
    SELECT DISTINCT e.tenant, e.session_id
    FROM events AS e
    SEMI JOIN later AS l ON l.tenant = e.tenant AND l.session_id = e.session_id
    WHERE e.ts < CAST($cutoff AS TIMESTAMP)
),
test_sessions AS (
    SELECT tenant, session_id FROM later
    EXCEPT
    SELECT tenant, session_id FROM begun_earlier
)
SELECT e.*
FROM events AS e
SEMI JOIN test_sessions AS s ON s.tenant = e.tenant AND s.session_id = e.session_id
