-- item_index: a dense 0-based number per (tenant, product), in (tenant,
-- product_id) order, with the counts the co-occurrence kernel needs.
-- Numbering in product id order makes "lower index" mean "lower product id",
-- which is how the kernel breaks ties exactly as ranked_pairs.sql does.
SELECT
    CAST(row_number() OVER (ORDER BY i.tenant, i.product_id) - 1 AS INTEGER) AS item,
    i.tenant,
    i.product_id,
    i.sessions,
    t.sessions AS tenant_sessions
FROM item_counts AS i
JOIN tenant_sessions AS t ON t.tenant = i.tenant
ORDER BY item
