-- session_steps: each session's products in the order it viewed them, the
-- sequences that the transition and sequential-rule lists count
-- (sql/ranked_steps.sql).
--
-- * the events sql/session_items.sql counts (the same event types, time
--   range and look-back window, catalogue products only), of the sessions
--   it keeps (its bot rules), read from its rows;
-- * in time order, ties by product id, so every build orders alike;
-- * a product viewed several times in a row is one step: reloading a page
--   is not a transition. A product viewed again later is a new step.
WITH viewed AS (
    SELECT
        e.tenant,
        e.session_id,
        e.product_id,
        e.ts,
        lag(e.product_id) OVER (PARTITION BY e.tenant, e.session_id ORDER BY e.ts, e.product_id) AS previous_product_id
    FROM events AS e
    JOIN session_items AS s
      ON s.tenant = e.tenant
     AND s.session_id = e.session_id
     AND s.product_id = e.product_id
    WHERE list_contains($event_types, e.event_type)
      AND (CAST($until AS TIMESTAMP) IS NULL OR e.ts < CAST($until AS TIMESTAMP))
      AND ($look_back_days = 0
           OR e.ts >= CAST($newest AS TIMESTAMP) - INTERVAL 1 DAY * CAST($look_back_days AS INTEGER))
)
SELECT
    tenant,
    session_id,
    row_number() OVER (PARTITION BY tenant, session_id ORDER BY ts, product_id) AS step,
    product_id
FROM viewed
WHERE previous_product_id IS NULL OR previous_product_id <> product_id
