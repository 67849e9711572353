-- baskets: each changed session's counted products as a list of item numbers,
-- with its tenant and the sign it counts with: +1 for what a session counts
-- for now, -1 for what it counted for before. The input of the pair-counting
-- kernel (engine/udfs/pairs.py); the same baskets change each item's and each
-- tenant's session count.
SELECT list(i.item) AS items, c.tenant, c.sign
FROM counted_changes AS c
JOIN items AS i
  ON i.tenant = c.tenant
 AND i.product_id = c.product_id
GROUP BY c.tenant, c.session_id, c.sign
