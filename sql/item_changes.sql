-- item_changes: how many more (or fewer) sessions count for each item, and
-- for its tenant, than before: the change to item_counts and tenant_sessions.
SELECT i.item, sum(c.sign) AS sessions
FROM counted_changes AS c
JOIN items AS i
  ON i.tenant = c.tenant
 AND i.product_id = c.product_id
GROUP BY i.item
