-- counted_changes: what the sessions counted again count for, signed: -1 for
-- each product a session counted for before (`counted_before`), +1 for each it
-- counts for now (`counted_after`). A session that did not change cancels out.
SELECT tenant, session_id, product_id, -1 AS sign FROM counted_before
UNION ALL
SELECT tenant, session_id, product_id, 1 AS sign FROM counted_after
