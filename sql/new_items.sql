-- new_items: a number for each product that sessions count for the first time,
-- after the $first numbers already given; numbers are never reused, so the
-- stored pair counts never need renumbering.
SELECT
    CAST($first + row_number() OVER (ORDER BY tenant, product_id) - 1 AS INTEGER) AS item,
    tenant,
    product_id
FROM (SELECT DISTINCT tenant, product_id FROM counted_changes) AS c
WHERE NOT EXISTS (SELECT 1 FROM items AS i WHERE i.tenant = c.tenant AND i.product_id = c.product_id)
