-- test_sessions: the test set as a build keeps it for the next one: each
-- test session's items (sql/session_items.sql over sql/test_events.sql, as
-- `test_session_items`) with the time the session began (its first event of
-- any kind). A session's items depend on its own events alone, so the next
-- build keeps these rows for every session that gained no event and still
-- began at or after its cut-off (sql/test_sessions_by_delta.sql).
SELECT i.tenant, i.session_id, i.product_id, i.first_seen, b.began
FROM test_session_items AS i
JOIN (
    SELECT tenant, session_id, min(ts) AS began
    FROM test_events
    GROUP BY tenant, session_id
) AS b
  ON b.tenant = i.tenant
 AND b.session_id = i.session_id
