-- visit_lists: at every step of a test session (sql/test_items.sql) that
-- has a next product, the list the session route would show for the visit
-- so far (server/session_routes.py): the products viewed up to that step,
-- the most recent first (its age 1, the one before 2, ...), each bring their
-- list of the served algorithm ($algorithm, among the training lists read
-- as `itemitem`); an item scores the sum of 1 / (age * rank) over the lists
-- it is on, the visit's own products are left out, and the best $top_n are
-- the step's list. A visit whose lists give nothing gets its tenant's
-- most-viewed products (the `popular` lists' leaders, by sessions).
--
-- Scores are ordered as floor(score * 1e9 + 0.5), ties going to the lower
-- product id: sums of the same terms added in another order tie exactly.
-- Rows look like `itemitem` rows ($name as the algorithm), so that
-- sql/evaluation.sql and sql/session_gains.sql score them as they are.
WITH steps AS (
    SELECT a.tenant, a.session_id, a.position
    FROM test_items AS a
    JOIN test_items AS b
      ON b.tenant = a.tenant
     AND b.session_id = a.session_id
     AND b.position = a.position + 1
),
viewed AS (
    SELECT s.tenant, s.session_id, s.position, v.product_id, s.position - v.position + 1 AS age
    FROM steps AS s
    JOIN test_items AS v
      ON v.tenant = s.tenant
     AND v.session_id = s.session_id
     AND v.position <= s.position
),
blended AS (
    SELECT
        w.tenant,
        w.session_id,
        w.position,
        r.related_product_id,
        sum(CAST(1 AS DOUBLE) / (w.age * r.rank)) AS score,
        max(r.related_sessions) AS related_sessions
    FROM viewed AS w
    JOIN itemitem AS r
      ON r.tenant = w.tenant
     AND r.product_id = w.product_id
     AND r.algorithm = $algorithm
    LEFT JOIN viewed AS seen
      ON seen.tenant = w.tenant
     AND seen.session_id = w.session_id
     AND seen.position = w.position
     AND seen.product_id = r.related_product_id
    WHERE seen.product_id IS NULL
    GROUP BY w.tenant, w.session_id, w.position, r.related_product_id
),
leaders AS (
    SELECT DISTINCT tenant, related_product_id, related_sessions
    FROM itemitem
    WHERE algorithm = 'popular'
),
fallback AS (
    SELECT s.tenant, s.session_id, s.position, l.related_product_id, l.related_sessions AS score, l.related_sessions
    FROM steps AS s
    JOIN leaders AS l ON l.tenant = s.tenant
    LEFT JOIN viewed AS seen
      ON seen.tenant = s.tenant
     AND seen.session_id = s.session_id
     AND seen.position = s.position
     AND seen.product_id = l.related_product_id
    LEFT JOIN (SELECT DISTINCT tenant, session_id, position FROM blended) AS listed
      ON listed.tenant = s.tenant
     AND listed.session_id = s.session_id
     AND listed.position = s.position
    WHERE seen.product_id IS NULL
      AND listed.position IS NULL
),
candidates AS (
    SELECT tenant, session_id, position, related_product_id, score, related_sessions FROM blended
    UNION ALL
    SELECT tenant, session_id, position, related_product_id, score, related_sessions FROM fallback
)
SELECT
    $name AS algorithm,
    tenant,
    session_id,
    position,
    related_product_id,
    row_number() OVER (
        PARTITION BY tenant, session_id, position ORDER BY floor(score * 1e9 + 0.5) DESC, related_product_id
    ) AS rank,
    related_sessions
FROM candidates
QUALIFY rank <= $top_n
