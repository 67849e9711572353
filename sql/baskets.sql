-- baskets: each session's products as a list of item_index numbers, the
-- input of the co-occurrence kernel (one Arrow list per session).
SELECT list(i.item) AS items
FROM session_items AS s
JOIN item_index AS i
  ON i.tenant = s.tenant
 AND i.product_id = s.product_id
GROUP BY s.tenant, s.session_id
