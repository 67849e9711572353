-- test_transitions: each consecutive pair of a test session's products
-- (sql/test_items.sql) as item numbers: the product viewed, the one viewed
-- next, and whether it is the session's first step (the talk's MRR scores
-- only those). A product no training session viewed has no number (-1).
-- In (tenant, session, position) order, as sql/transition_ranks.sql is read,
-- so that the bootstrap resamples sessions alike on both paths; a session's
-- steps begin with its first.
SELECT
    a.tenant,
    coalesce(i.item, -1) AS item,
    coalesce(n.item, -1) AS next_item,
    a.position = 1 AS first_step
FROM test_items AS a
JOIN test_items AS b
  ON b.tenant = a.tenant
 AND b.session_id = a.session_id
 AND b.position = a.position + 1
LEFT JOIN items AS i ON i.tenant = a.tenant AND i.product_id = a.product_id
LEFT JOIN items AS n ON n.tenant = b.tenant AND n.product_id = b.product_id
ORDER BY a.tenant, a.session_id, a.position
