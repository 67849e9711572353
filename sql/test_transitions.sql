-- test_transitions: each consecutive pair of a test session's products
-- (sql/test_items.sql) as item numbers: the product viewed, the one viewed
-- next, and whether it is the session's first step (the talk's MRR scores
-- only those). A product no training session viewed has no number (-1).
-- In (tenant, session, position) order, as sql/transition_ranks.sql is read,
-- so that the bootstrap resamples sessions alike on both paths; a session's
-- steps begin with its first. The next product comes from one window over
-- each session's positions, not a join of the items with themselves.
WITH numbered AS (
    SELECT t.tenant, t.session_id, t.position, coalesce(i.item, -1) AS item
    FROM test_items AS t
    LEFT JOIN items AS i ON i.tenant = t.tenant AND i.product_id = t.product_id
),
stepped AS (
    SELECT
        tenant,
        session_id,
        position,
        item,
        lead(item) OVER (PARTITION BY tenant, session_id ORDER BY position) AS next_item
    FROM numbered
)
SELECT tenant, item, next_item, position = 1 AS first_step
FROM stepped
WHERE next_item IS NOT NULL
ORDER BY tenant, session_id, position
