-- visual_blend: the cold-start blend. Clicks where they say enough, looks
-- where they do not.
--
-- A product viewed in at least $min_sessions sessions keeps its `llr` list,
-- topped up with its `visual` look-alikes when that list is shorter than
-- $top_n (a long-tail product often has few pairs above min_support). A
-- product with fewer sessions, new in the catalogue or never viewed, gets its
-- `visual` list alone: one or two sessions are too little evidence for the
-- LLR, while its photo is there from the first day.
--
-- Reads `itemitem` (which must already hold the `llr` and `visual` rows) and
-- `item_counts`. `distance_score` and the evidence columns are those of the
-- row's source: the LLR and its counts, or the visual similarity with NULL
-- counts; compare ranks, not scores, across the two.
WITH warm AS (
    SELECT i.tenant, i.product_id, i.rank, i.related_product_id, i.distance_score,
           i.cooccurrence, i.product_sessions, i.related_sessions, 0 AS source
    FROM itemitem AS i
    JOIN item_counts AS c ON c.tenant = i.tenant AND c.product_id = i.product_id
    WHERE i.algorithm = 'llr' AND c.sessions >= $min_sessions
),
looks AS (
    SELECT v.tenant, v.product_id, v.rank, v.related_product_id, v.distance_score,
           v.cooccurrence, v.product_sessions, v.related_sessions, 1 AS source
    FROM itemitem AS v
    WHERE v.algorithm = 'visual'
      AND NOT EXISTS (
          SELECT 1 FROM warm AS w
          WHERE w.tenant = v.tenant AND w.product_id = v.product_id AND w.related_product_id = v.related_product_id
      )
),
blended AS (
    SELECT *, row_number() OVER (PARTITION BY tenant, product_id ORDER BY source, rank) AS blended_rank
    FROM (SELECT * FROM warm UNION ALL SELECT * FROM looks)
)
SELECT
    tenant,
    'visual_blend' AS algorithm,
    product_id,
    CAST(blended_rank AS INTEGER) AS rank,
    related_product_id,
    distance_score,
    cooccurrence,
    product_sessions,
    related_sessions
FROM blended
WHERE blended_rank <= $top_n
ORDER BY tenant, product_id, rank
