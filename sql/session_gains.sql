-- session_gains: for every algorithm and test session, the sum over the
-- session's transitions of 1/rank within the top 20 (0 when the next product
-- is not there), and how many transitions the session has: the share of
-- MRR@20 each session holds (sql/transition_ranks.sql gives the ranks).
--
-- A build resamples these sessions for the bootstrap intervals of the
-- differences in MRR@20 (engine.pipeline.evaluation.with_session_intervals);
-- the order is that of the sessions the resamples draw.
SELECT
    algorithm,
    tenant,
    session_id,
    sum(CASE WHEN rank <= 20 THEN 1.0 / rank ELSE 0.0 END) AS gain,
    count(*) AS transitions
FROM transition_ranks
GROUP BY algorithm, tenant, session_id
ORDER BY algorithm, tenant, session_id
