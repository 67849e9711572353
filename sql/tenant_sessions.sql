-- tenant_sessions: the number of sessions per tenant, N in the 2x2 table of
-- the log-likelihood ratio. Sessions dropped as bots are not counted.
SELECT tenant, count(DISTINCT session_id) AS sessions
FROM session_items
GROUP BY tenant
