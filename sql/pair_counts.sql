-- pair_counts: for every ordered pair of distinct products of one tenant, the
-- number of sessions that saw both (k11 of the talk's table). Pairs seen
-- together in fewer than $min_support sessions are dropped.
--
-- This self-join is the readable definition. `etalage build` computes the same
-- numbers with the Numba kernel in engine/udfs/cooccurrence.py, which never
-- materialises all pairs; tests check the two agree.
SELECT
    a.tenant,
    a.product_id,
    b.product_id AS related_product_id,
    count(*) AS cooccurrence
FROM session_items AS a
JOIN session_items AS b
  ON b.tenant = a.tenant
 AND b.session_id = a.session_id
 AND b.product_id <> a.product_id
GROUP BY a.tenant, a.product_id, b.product_id
HAVING count(*) >= $min_support
