-- popular: the baseline every algorithm must beat. Each product's list is
-- its tenant's most-viewed products (by sessions), leaving out the product itself.
WITH ranked AS (
    SELECT
        tenant,
        product_id,
        sessions,
        row_number() OVER (PARTITION BY tenant ORDER BY sessions DESC, product_id) AS popularity
    FROM item_counts
)
SELECT
    a.tenant,
    'popular' AS algorithm,
    a.product_id,
    row_number() OVER (PARTITION BY a.tenant, a.product_id ORDER BY b.popularity) AS rank,
    b.product_id AS related_product_id,
    CAST(b.sessions AS DOUBLE) AS distance_score,
    CAST(NULL AS BIGINT) AS cooccurrence
FROM item_counts AS a
JOIN ranked AS b
  ON b.tenant = a.tenant
 AND b.popularity <= $top_n + 1
 AND b.product_id <> a.product_id
QUALIFY rank <= $top_n
