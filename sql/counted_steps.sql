-- counted_steps: the steps (sql/session_steps.sql) of the sessions counted
-- again, signed as sql/counted_changes.sql signs their products: -1 as they
-- were counted before (`steps_before`), +1 as they count now (`steps_after`).
SELECT tenant, session_id, step, product_id, -1 AS sign FROM steps_before
UNION ALL
SELECT tenant, session_id, step, product_id, 1 AS sign FROM steps_after
