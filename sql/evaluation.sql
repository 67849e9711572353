-- evaluation: how well each algorithm's lists, computed from the events
-- before the cut-off (the training lists, read as `itemitem`), predict what
-- test sessions viewed next (the ranks of sql/transition_ranks.sql).
--
-- * mrr: the talk's Mean Reciprocal Rank. For each test session with at
--   least two products, the reciprocal rank of its second product in the
--   list of its first (0 when absent), averaged over those sessions;
-- * mrr_at_k, hit_rate_at_k: the same over every consecutive pair of
--   distinct products in a test session, counting only ranks <= k;
-- * coverage: the share of the catalogue that appears in some list;
-- * popularity_bias: the mean of ln(1 + sessions) over every product the
--   lists recommend (sessions: how many training sessions viewed it); higher
--   means lists lean on what is popular anyway.
WITH listed AS (
    SELECT
        algorithm,
        count(DISTINCT (tenant, related_product_id)) / (SELECT count(*) FROM products) AS coverage,
        avg(ln(1 + coalesce(related_sessions, 0))) AS popularity_bias
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
    listed.coverage,
    listed.popularity_bias
FROM transition_ranks AS ranked
JOIN listed ON listed.algorithm = ranked.algorithm
GROUP BY ranked.algorithm, listed.coverage, listed.popularity_bias
ORDER BY ranked.algorithm
