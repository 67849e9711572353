-- ranked_steps: the top $top_n related products per product by what follows
-- it in sessions' steps (sql/session_steps.sql), the sequence-aware lists:
--
-- * transitions:      how often B was viewed directly after A;
-- * transitions_both: how often B was viewed directly before or after A;
-- * sequential_rules: every B viewed up to $sr_window steps after A, each
--                     time weighted by 1 / distance (Ludewig and Jannach,
--                     "Evaluation of session-based recommendation
--                     algorithms", 2018). The weights are summed as the
--                     integers $sr_scale // distance ($sr_scale: the least
--                     common multiple of 1 .. $sr_window) and divided once,
--                     so the sum is exact; the kernel sums alike;
-- * sequential_rules_both: the same for every B viewed up to $sr_window steps
--                     before or after A;
-- * sequence_blend:   sequential_rules_both plus co-occurrence: each session
--                     that viewed both (sql/pair_counts.sql, at least
--                     $min_support of them) adds 1 / ($sr_window + 1), as if
--                     B had been viewed one step beyond the window. Summed as
--                     integers over $blend_scale, the least common multiple
--                     of 1 .. $sr_window + 1.
--
-- `cooccurrence` holds the transition count (NULL for the sequential rules,
-- whose score is the evidence). Ties are broken by the related product id.
-- `etalage build` computes the same rows with the Numba kernels in
-- engine/udfs/sequences.py and engine/udfs/cooccurrence.py.
WITH followed AS (
    SELECT a.tenant, a.product_id, b.product_id AS related_product_id, b.step - a.step AS distance
    FROM session_steps AS a
    JOIN session_steps AS b
      ON b.tenant = a.tenant
     AND b.session_id = a.session_id
     AND b.step > a.step
     AND b.step <= a.step + $sr_window
     AND b.product_id <> a.product_id
),
around AS (
    SELECT tenant, product_id, related_product_id, distance FROM followed
    UNION ALL
    SELECT tenant, related_product_id, product_id, distance FROM followed
),
scored AS (
    SELECT tenant, 'transitions' AS algorithm, product_id, related_product_id,
        count(*) AS cooccurrence, CAST(count(*) AS DOUBLE) AS distance_score
    FROM followed
    WHERE distance = 1
    GROUP BY tenant, product_id, related_product_id
    UNION ALL
    SELECT tenant, 'transitions_both' AS algorithm, product_id, related_product_id,
        count(*) AS cooccurrence, CAST(count(*) AS DOUBLE) AS distance_score
    FROM around
    WHERE distance = 1
    GROUP BY tenant, product_id, related_product_id
    UNION ALL
    SELECT tenant, 'sequential_rules' AS algorithm, product_id, related_product_id,
        CAST(NULL AS BIGINT) AS cooccurrence,
        CAST(sum(CAST($sr_scale AS BIGINT) // distance) AS DOUBLE) / $sr_scale AS distance_score
    FROM followed
    GROUP BY tenant, product_id, related_product_id
    UNION ALL
    SELECT tenant, 'sequential_rules_both' AS algorithm, product_id, related_product_id,
        CAST(NULL AS BIGINT) AS cooccurrence,
        CAST(sum(CAST($sr_scale AS BIGINT) // distance) AS DOUBLE) / $sr_scale AS distance_score
    FROM around
    GROUP BY tenant, product_id, related_product_id
    UNION ALL
    SELECT tenant, 'sequence_blend' AS algorithm, product_id, related_product_id,
        CAST(NULL AS BIGINT) AS cooccurrence,
        CAST(sum(weight) AS DOUBLE) / $blend_scale AS distance_score
    FROM (
        SELECT tenant, product_id, related_product_id, CAST($blend_scale AS BIGINT) // distance AS weight
        FROM around
        UNION ALL
        SELECT tenant, product_id, related_product_id,
            cooccurrence * (CAST($blend_scale AS BIGINT) // ($sr_window + 1)) AS weight
        FROM pair_counts
    )
    GROUP BY tenant, product_id, related_product_id
)
SELECT
    s.tenant,
    s.algorithm,
    s.product_id,
    row_number() OVER (
        PARTITION BY s.tenant, s.algorithm, s.product_id
        ORDER BY s.distance_score DESC, s.related_product_id
    ) AS rank,
    s.related_product_id,
    s.distance_score,
    s.cooccurrence,
    a.sessions AS product_sessions,
    b.sessions AS related_sessions
FROM scored AS s
JOIN item_counts AS a ON a.tenant = s.tenant AND a.product_id = s.product_id
JOIN item_counts AS b ON b.tenant = s.tenant AND b.product_id = s.related_product_id
QUALIFY rank <= $top_n
