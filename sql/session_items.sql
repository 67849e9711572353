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
-- * the bot rules drop whole sessions: more than $max_session_items distinct
--   products (a crawler walking the catalogue), or more than
--   $max_views_per_minute product views in one clock minute (faster than a
--   person clicks); 0 turns a rule off. The evaluation's test sessions are
--   read through this file too (sql/test_events.sql), so both obey the same
--   rules. A session's distinct products are counted from its rows here, and
--   a rule that is off reads nothing.
--
-- `viewed` is NOT MATERIALIZED: scanning the events again for the minute rule
-- costs less time and memory than holding every event in a table
-- (docs/benchmarks.md).
WITH viewed AS NOT MATERIALIZED (
    SELECT e.tenant, e.session_id, e.product_id, e.ts
    FROM events AS e
    JOIN products AS p
      ON p.tenant = e.tenant
     AND p.product_id = e.product_id
    WHERE list_contains($event_types, e.event_type)
      AND (CAST($until AS TIMESTAMP) IS NULL OR e.ts < CAST($until AS TIMESTAMP))
      AND ($look_back_days = 0
           OR e.ts >= CAST($newest AS TIMESTAMP) - INTERVAL 1 DAY * CAST($look_back_days AS INTEGER))
),
items AS (
    SELECT tenant, session_id, product_id, min(ts) AS first_seen
    FROM viewed
    GROUP BY tenant, session_id, product_id
),
bots AS (
    SELECT tenant, session_id
    FROM items
    WHERE $max_session_items > 0
    GROUP BY tenant, session_id
    HAVING count(*) > $max_session_items
    UNION
    SELECT tenant, session_id
    FROM viewed
    WHERE $max_views_per_minute > 0
    GROUP BY tenant, session_id, date_trunc('minute', ts)
    HAVING count(*) > $max_views_per_minute
)
SELECT i.tenant, i.session_id, i.product_id, i.first_seen
FROM items AS i
ANTI JOIN bots AS b
  ON b.tenant = i.tenant
 AND b.session_id = i.session_id
