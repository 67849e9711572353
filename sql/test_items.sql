-- test_items: the evaluation's test set. For every test session
-- (sql/test_events.sql) that the bot rules keep, its distinct catalogue
-- products in the order it first viewed them (position 1, 2, ...), as
-- sql/session_items.sql reads them from the test events (`test_session_items`).
-- A product viewed again later keeps its first position, so repeats never
-- make a transition.
SELECT
    tenant,
    session_id,
    product_id,
    row_number() OVER (PARTITION BY tenant, session_id ORDER BY first_seen, product_id) AS position
FROM test_session_items
