-- session_items: the distinct products each session looked at; the "baskets"
-- that every co-occurrence count is made of.
--
-- * only events of the configured types ($event_types) that name a product;
-- * only products in the tenant's catalogue (a product id garbled in the URL
--   or a delisted product does not become a recommendation);
-- * only events before $until (NULL: all), which is how the evaluation keeps
--   its test period out of the recommendations;
-- * only the last $look_back_days days (0 = all) before $newest, the newest
--   event before $until (sql/newest_event.sql);
-- * sessions with more than $max_session_items distinct products are dropped
--   as bots or scrapers.
WITH viewed AS (
    SELECT
        e.tenant,
        e.session_id,
        e.product_id,
        min(e.ts) AS first_seen
    FROM events AS e
    JOIN products AS p
      ON p.tenant = e.tenant
     AND p.product_id = e.product_id
    WHERE list_contains($event_types, e.event_type)
      AND (CAST($until AS TIMESTAMP) IS NULL OR e.ts < CAST($until AS TIMESTAMP))
      AND ($look_back_days = 0
           OR e.ts >= CAST($newest AS TIMESTAMP) - INTERVAL 1 DAY * CAST($look_back_days AS INTEGER))
    GROUP BY e.tenant, e.session_id, e.product_id
)
SELECT tenant, session_id, product_id, first_seen
FROM viewed
QUALIFY count(*) OVER (PARTITION BY tenant, session_id) <= $max_session_items
