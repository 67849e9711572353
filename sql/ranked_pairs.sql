-- ranked_pairs: the top $top_n related products per product, by each of the
-- three co-occurrence scores:
--
-- * cooccurrence: the raw count of sessions with both products;
-- * jaccard:      |A and B| / |A or B|;
-- * llr:          Dunning's log-likelihood ratio of the 2x2 table
--                 (k11 both, k12 B not A, k21 A not B, k22 neither),
--                 computed by the Numba UDF llr() exactly as Mahout does.
--
-- Ties are broken by the related product id, so every build ranks alike.
WITH evidence AS (
    SELECT
        p.tenant,
        p.product_id,
        p.related_product_id,
        p.cooccurrence,
        a.sessions AS product_sessions,
        b.sessions AS related_sessions,
        t.sessions AS tenant_sessions
    FROM pair_counts AS p
    JOIN item_counts AS a ON a.tenant = p.tenant AND a.product_id = p.product_id
    JOIN item_counts AS b ON b.tenant = p.tenant AND b.product_id = p.related_product_id
    JOIN tenant_sessions AS t ON t.tenant = p.tenant
),
scored AS (
    SELECT *, 'cooccurrence' AS algorithm, CAST(cooccurrence AS DOUBLE) AS distance_score
    FROM evidence
    UNION ALL
    SELECT *, 'jaccard' AS algorithm,
        cooccurrence / CAST(product_sessions + related_sessions - cooccurrence AS DOUBLE) AS distance_score
    FROM evidence
    UNION ALL
    SELECT *, 'llr' AS algorithm,
        llr(
            cooccurrence,
            related_sessions - cooccurrence,
            product_sessions - cooccurrence,
            tenant_sessions - product_sessions - related_sessions + cooccurrence
        ) AS distance_score
    FROM evidence
)
SELECT
    tenant,
    algorithm,
    product_id,
    row_number() OVER (
        PARTITION BY tenant, algorithm, product_id
        ORDER BY distance_score DESC, related_product_id
    ) AS rank,
    related_product_id,
    distance_score,
    cooccurrence,
    product_sessions,
    related_sessions
FROM scored
QUALIFY rank <= $top_n
