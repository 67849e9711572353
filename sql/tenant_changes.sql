-- tenant_changes: how many more (or fewer) sessions count for each tenant than before
-- (N in the 2x2 table of the log-likelihood ratio).
SELECT tenant, sum(sign) AS sessions
FROM (SELECT DISTINCT tenant, session_id, sign FROM counted_changes)
GROUP BY tenant
