-- The benchmark's baseline: the LLR top 20 of every product as one plain DuckDB
-- script, the way an analyst would write it without etalage, from the same
-- Divolte Parquet files and catalogue, with the same rules as the benchmark's
-- lean etalage config (unflagged pageView and addToCart events of catalogue
-- products, sessions of at most 50 products, pairs in at least 2 sessions).
-- tests/bench/bench_build.py runs it with the events glob, the catalogue and
-- the output path bound, and checks that its rows are etalage's `llr` rows.
CREATE MACRO xlogx(x) AS CASE WHEN x = 0 THEN 0.0 ELSE x * ln(x) END;

CREATE TABLE session_items AS
WITH viewed AS (
    SELECT
        regexp_extract(location, '^https?://[^/]*\.([a-z]+)/', 1) AS tenant,
        sessionId AS session_id,
        nullif(regexp_extract(location, '/p/([0-9]+)/', 1), '') AS product_id
    FROM read_parquet($events)
    WHERE NOT coalesce(detectedDuplicate, FALSE)
      AND NOT coalesce(detectedCorruption, FALSE)
      AND eventType IN ('pageView', 'addToCart')
),
distinct_items AS (
    SELECT DISTINCT v.tenant, v.session_id, v.product_id
    FROM viewed AS v
    JOIN read_parquet($catalogue) AS c ON c.tenant = v.tenant AND c.product_id = v.product_id
)
SELECT * FROM distinct_items
QUALIFY count(*) OVER (PARTITION BY tenant, session_id) <= 50;

CREATE TABLE item_counts AS
SELECT tenant, product_id, count(*) AS sessions FROM session_items GROUP BY ALL;

CREATE TABLE tenant_sessions AS
SELECT tenant, count(DISTINCT session_id) AS sessions FROM session_items GROUP BY ALL;

COPY (
    WITH pairs AS (
        SELECT a.tenant, a.product_id, b.product_id AS related_product_id, count(*) AS k11
        FROM session_items AS a
        JOIN session_items AS b
          ON b.tenant = a.tenant AND b.session_id = a.session_id AND b.product_id <> a.product_id
        GROUP BY ALL
        HAVING count(*) >= 2
    ),
    tables AS (
        SELECT p.tenant, p.product_id, p.related_product_id, p.k11,
               b.sessions - p.k11 AS k12, a.sessions - p.k11 AS k21,
               t.sessions - a.sessions - b.sessions + p.k11 AS k22
        FROM pairs AS p
        JOIN item_counts AS a ON a.tenant = p.tenant AND a.product_id = p.product_id
        JOIN item_counts AS b ON b.tenant = p.tenant AND b.product_id = p.related_product_id
        JOIN tenant_sessions AS t ON t.tenant = p.tenant
    ),
    -- Mahout's logLikelihoodRatio: 2 * (row entropy + column entropy - matrix entropy), never below 0.
    scored AS (
        SELECT *,
            greatest(0.0, 2 * (
                (xlogx(k11 + k12 + k21 + k22) - xlogx(k11 + k12) - xlogx(k21 + k22))
              + (xlogx(k11 + k12 + k21 + k22) - xlogx(k11 + k21) - xlogx(k12 + k22))
              - (xlogx(k11 + k12 + k21 + k22) - xlogx(k11) - xlogx(k12) - xlogx(k21) - xlogx(k22))
            )) AS llr
        FROM tables
    )
    SELECT tenant, product_id,
           row_number() OVER (PARTITION BY tenant, product_id ORDER BY llr DESC, related_product_id) AS rank,
           related_product_id, llr AS distance_score
    FROM scored
    QUALIFY rank <= 20
) TO $output (FORMAT parquet);
