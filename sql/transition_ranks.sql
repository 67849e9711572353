-- transition_ranks: for every test transition (two consecutive distinct
-- products of a test session, sql/test_items.sql) and every algorithm of
-- `itemitem` (the training lists), the rank of the next product in the list
-- of the product viewed (NULL: not in it).
--
-- sql/evaluation.sql averages these ranks into its scores; a build also
-- resamples them by session for the bootstrap intervals of its differences.
WITH transitions AS (
    SELECT a.tenant, a.session_id, a.position, a.product_id, b.product_id AS next_product_id
    FROM test_items AS a
    JOIN test_items AS b
      ON b.tenant = a.tenant
     AND b.session_id = a.session_id
     AND b.position = a.position + 1
),
algorithms AS (
    SELECT DISTINCT algorithm FROM itemitem
)
SELECT t.tenant, t.session_id, t.position, g.algorithm, r.rank
FROM transitions AS t
CROSS JOIN algorithms AS g
LEFT JOIN itemitem AS r
  ON r.tenant = t.tenant
 AND r.algorithm = g.algorithm
 AND r.product_id = t.product_id
 AND r.related_product_id = t.next_product_id
