-- baskets: each session's counted products as a list of item numbers, the input
-- of the pair-counting kernel (engine/udfs/pairs.py), with the sign it counts
-- with: +1 for what a session counts for now, -1 for what it counted for before.
SELECT list(i.item) AS items, c.sign
FROM counted_changes AS c
JOIN items AS i
  ON i.tenant = c.tenant
 AND i.product_id = c.product_id
GROUP BY c.tenant, c.session_id, c.sign
