-- click_through: per experiment and variant, how often a visitor went on to view
-- one of the products the gateway showed them.
--
-- An exposure counts as clicked when the same visitor (events.party_id) views
-- one of its shown products on the same tenant within 30 minutes after it.
WITH attributed AS (
    SELECT
        x.exposure_id,
        x.experiment,
        x.variant,
        count(e.ts) > 0 AS clicked
    FROM exposures AS x
    LEFT JOIN events AS e
        ON e.party_id = x.visitor
        AND e.tenant = x.tenant
        AND e.ts > x.ts
        AND e.ts <= x.ts + INTERVAL 30 MINUTE
        AND list_contains(x.shown, e.product_id)
    GROUP BY x.exposure_id, x.experiment, x.variant
)
SELECT
    experiment,
    variant,
    count(*) AS exposures,
    count(*) FILTER (WHERE clicked) AS clicks,
    count(*) FILTER (WHERE clicked) / count(*) AS click_through
FROM attributed
GROUP BY experiment, variant
ORDER BY experiment, variant
