-- catalogue_changes: the products added to or removed from a tenant's catalogue
-- since the last build (`previous_products`). Sessions that viewed one of them
-- count for other products now, so a build counts them again.
(SELECT tenant, product_id FROM products EXCEPT SELECT tenant, product_id FROM previous_products)
UNION ALL
(SELECT tenant, product_id FROM previous_products EXCEPT SELECT tenant, product_id FROM products)
