-- kept_item_counts: the `item_counts` view, from the item counts a build keeps
-- (`items`): in how many sessions each product was seen, for the products seen now.
SELECT tenant, product_id, sessions
FROM items
WHERE sessions > 0
