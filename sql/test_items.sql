-- test_items: the evaluation's test set. For every session that starts at or
-- after the cut-off $cutoff, its distinct catalogue products in the order it
-- first viewed them (position 1, 2, ...). A product viewed again later keeps
-- its first position, so repeats never make a transition.
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
),
viewed AS (
    SELECT e.tenant, e.session_id, e.product_id, min(e.ts) AS first_seen
    FROM events AS e
    JOIN test_sessions AS s ON s.tenant = e.tenant AND s.session_id = e.session_id
    JOIN products AS p ON p.tenant = e.tenant AND p.product_id = e.product_id
    WHERE list_contains($event_types, e.event_type)
      AND e.ts >= CAST($cutoff AS TIMESTAMP)
    GROUP BY e.tenant, e.session_id, e.product_id
)
SELECT
    tenant,
    session_id,
    product_id,
    row_number() OVER (PARTITION BY tenant, session_id ORDER BY first_seen, product_id) AS position
FROM viewed
