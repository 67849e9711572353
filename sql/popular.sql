-- popular: the baseline every algorithm must beat. Each product's list is
-- its tenant's most-viewed products (by sessions, ties by product id),
-- leaving out the product itself.
--
-- A product that is itself among the top $top_n + 1 moves the ones below it
-- up one place; every other product gets the top $top_n as they are.
WITH ranked AS (
    SELECT
        tenant,
        product_id,
        sessions,
        row_number() OVER (PARTITION BY tenant ORDER BY sessions DESC, product_id) AS popularity
    FROM item_counts
),
listed AS (
    SELECT
        a.tenant,
        a.product_id,
        b.popularity - CASE WHEN a.popularity < b.popularity THEN 1 ELSE 0 END AS rank,
        b.product_id AS related_product_id,
        a.sessions AS product_sessions,
        b.sessions AS related_sessions
    FROM ranked AS a
    JOIN ranked AS b
      ON b.tenant = a.tenant
     AND b.popularity <= $top_n + 1
     AND b.product_id <> a.product_id
)
SELECT
    tenant,
    'popular' AS algorithm,
    product_id,
    rank,
    related_product_id,
    CAST(related_sessions AS DOUBLE) AS distance_score,
    CAST(NULL AS BIGINT) AS cooccurrence,
    product_sessions,
    related_sessions
FROM listed
WHERE rank <= $top_n
