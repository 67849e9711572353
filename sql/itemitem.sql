-- itemitem: the recommendation table analysts and the server read, one row
-- per (tenant, algorithm, product, rank), with the evidence behind each score,
-- for the algorithms that algorithms.compute names ($compute).
--
-- "Top 5 for a product", the talk's Cassandra query, is
--   SELECT related_product_id, distance_score FROM itemitem
--   WHERE tenant = ? AND algorithm = ? AND product_id = ? ORDER BY rank LIMIT 5
SELECT
    tenant,
    algorithm,
    product_id,
    CAST(rank AS INTEGER) AS rank,
    related_product_id,
    distance_score,
    cooccurrence,
    product_sessions,
    related_sessions
FROM (
    SELECT * FROM ranked_pairs
    UNION ALL
    SELECT * FROM ranked_steps
    UNION ALL
    SELECT * FROM popular
)
WHERE list_contains($compute, algorithm)
ORDER BY tenant, algorithm, product_id, rank
