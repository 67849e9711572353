-- test_sessions_by_delta: the test set (sql/test_sessions.sql) from the
-- last build's (`kept_test_sessions`, cut off at or before $cutoff) and the
-- sessions this build counts again (`changed_sessions`: those with new or
-- late events, or that a catalogue change or the look-back window touches),
-- read again from all their events as `changed_test_sessions`.
--
-- Every other kept session is the same as it was; it stays a test session
-- while it began at or after the cut-off, which moves forward with the
-- newest event.
SELECT k.tenant, k.session_id, k.product_id, k.first_seen, k.began
FROM kept_test_sessions AS k
ANTI JOIN changed_sessions AS c
  ON c.tenant = k.tenant
 AND c.session_id = k.session_id
WHERE k.began >= CAST($cutoff AS TIMESTAMP)
UNION ALL
SELECT tenant, session_id, product_id, first_seen, began
FROM changed_test_sessions
