-- evaluation: how well each algorithm's lists, computed from the events
-- before the cut-off (the training lists, read as `itemitem`), predict what
-- test sessions viewed next.
--
-- * mrr: the talk's Mean Reciprocal Rank. For each test session with at
--   least two products, the reciprocal rank of its second product in the
--   list of its first (0 when absent), averaged over those sessions;
-- * mrr_at_k, hit_rate_at_k: the same over every consecutive pair of
--   distinct products in a test session, counting only ranks <= k;
-- * coverage: the share of the catalogue that appears in some list.
WITH transitions AS (
    SELECT a.tenant, a.position, a.product_id, b.product_id AS next_product_id
    FROM test_items AS a
    JOIN test_items AS b
      ON b.tenant = a.tenant
     AND b.session_id = a.session_id
     AND b.position = a.position + 1
),
algorithms AS (
    SELECT DISTINCT algorithm FROM itemitem
),
ranked AS (
    SELECT g.algorithm, t.position, r.rank
    FROM transitions AS t
    CROSS JOIN algorithms AS g
    LEFT JOIN itemitem AS r
      ON r.tenant = t.tenant
     AND r.algorithm = g.algorithm
     AND r.product_id = t.product_id
     AND r.related_product_id = t.next_product_id
),
coverage AS (
    SELECT algorithm, count(DISTINCT (tenant, related_product_id)) / (SELECT count(*) FROM products) AS coverage
    FROM itemitem
    GROUP BY algorithm
)
SELECT
    ranked.algorithm,
    count(*) FILTER (WHERE position = 1) AS sessions,
    coalesce(avg(coalesce(1.0 / rank, 0.0)) FILTER (WHERE position = 1), 0.0) AS mrr,
    count(*) AS pairs,
    coalesce(avg(CASE WHEN rank <= 5 THEN 1.0 / rank ELSE 0.0 END), 0.0) AS mrr_at_5,
    coalesce(avg(CASE WHEN rank <= 10 THEN 1.0 / rank ELSE 0.0 END), 0.0) AS mrr_at_10,
    coalesce(avg(CASE WHEN rank <= 20 THEN 1.0 / rank ELSE 0.0 END), 0.0) AS mrr_at_20,
    coalesce(avg(CASE WHEN rank <= 5 THEN 1.0 ELSE 0.0 END), 0.0) AS hit_rate_at_5,
    coalesce(avg(CASE WHEN rank <= 10 THEN 1.0 ELSE 0.0 END), 0.0) AS hit_rate_at_10,
    coalesce(avg(CASE WHEN rank <= 20 THEN 1.0 ELSE 0.0 END), 0.0) AS hit_rate_at_20,
    coverage.coverage
FROM ranked
JOIN coverage ON coverage.algorithm = ranked.algorithm
GROUP BY ranked.algorithm, coverage.coverage
ORDER BY ranked.algorithm
