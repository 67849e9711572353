-- itemitem: the recommendation table analysts and the server read, one row
-- per (tenant, algorithm, product, rank), with the evidence behind each score.
--
-- "Top 5 for a product", the talk's Cassandra query, is
--   SELECT related_product_id, distance_score FROM itemitem
--   WHERE tenant = ? AND algorithm = ? AND product_id = ? ORDER BY rank LIMIT 5
SELECT
    r.tenant,
    r.algorithm,
    r.product_id,
    CAST(r.rank AS INTEGER) AS rank,
    r.related_product_id,
    r.distance_score,
    r.cooccurrence,
    a.sessions AS product_sessions,
    b.sessions AS related_sessions
FROM (
    SELECT * FROM ranked_pairs
    UNION ALL
    SELECT * FROM popular
) AS r
JOIN item_counts AS a ON a.tenant = r.tenant AND a.product_id = r.product_id
JOIN item_counts AS b ON b.tenant = r.tenant AND b.product_id = r.related_product_id
ORDER BY r.tenant, r.algorithm, r.product_id, r.rank
