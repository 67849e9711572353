-- step_lists: each changed session's steps as a list of item numbers in step
-- order, with the sign it counts with. The input of the follow-counting
-- kernel (engine/udfs/sequences.py), as sql/baskets.sql is of the pairs'.
SELECT list(i.item ORDER BY c.step) AS items, c.sign
FROM counted_steps AS c
JOIN items AS i
  ON i.tenant = c.tenant
 AND i.product_id = c.product_id
GROUP BY c.tenant, c.session_id, c.sign
