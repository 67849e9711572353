-- item_counts: in how many sessions each product was seen (the row and
-- column sums of the talk's co-occurrence table).
SELECT tenant, product_id, count(*) AS sessions
FROM session_items
GROUP BY tenant, product_id
