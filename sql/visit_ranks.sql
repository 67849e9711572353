-- visit_ranks: for every test transition (two consecutive distinct products
-- of a test session, sql/test_items.sql), the rank of the next product in
-- the visit's list at that step (sql/visit_lists.sql; NULL: not in it), in
-- the columns of sql/transition_ranks.sql, which sql/evaluation.sql and
-- sql/session_gains.sql read.
SELECT a.tenant, a.session_id, a.position, $name AS algorithm, v.rank
FROM test_items AS a
JOIN test_items AS b
  ON b.tenant = a.tenant
 AND b.session_id = a.session_id
 AND b.position = a.position + 1
LEFT JOIN visit_lists AS v
  ON v.tenant = a.tenant
 AND v.session_id = a.session_id
 AND v.position = a.position
 AND v.related_product_id = b.product_id
