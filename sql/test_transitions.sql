-- test_transitions: each consecutive pair of a test session's products as
-- item numbers: the product viewed, the one viewed next, and whether it is
-- the session's first step (the talk's MRR scores only those). A product no
-- training session viewed has no number (-1).
--
-- The steps are those of sql/test_items.sql, read from the test sessions'
-- items (`test_sessions`) as that file reads them: each session's distinct
-- products in the order it first viewed them. The position and the next
-- product come from one window over each session, so the test set is sorted
-- once, not once for the positions and again for the next product. In
-- (tenant, session, position) order, as sql/transition_ranks.sql is read, so
-- that the bootstrap resamples sessions alike on both paths.
WITH numbered AS (
    SELECT t.tenant, t.session_id, t.product_id, t.first_seen, coalesce(i.item, -1) AS item
    FROM test_sessions AS t
    LEFT JOIN items AS i ON i.tenant = t.tenant AND i.product_id = t.product_id
),
stepped AS (
    SELECT
        tenant,
        session_id,
        row_number() OVER session_order AS position,
        item,
        lead(item) OVER session_order AS next_item
    FROM numbered
    WINDOW session_order AS (PARTITION BY tenant, session_id ORDER BY first_seen, product_id)
)
SELECT tenant, item, next_item, position = 1 AS first_step
FROM stepped
WHERE next_item IS NOT NULL
ORDER BY tenant, session_id, position
