-- changed_sessions: the sessions a build counts again, because the products
-- they count for may differ from what the last build counted:
--
-- * sessions with events in the files this build ingests (`arrived_events`):
--   new sessions, and sessions that span the last build and this one, or that
--   a late file for an old hour adds to;
-- * sessions with events that the look-back window let in before and leaves
--   out now ($window_was to $window_is; both NULL without a window);
-- * sessions that viewed a product added to or removed from the catalogue.
SELECT tenant, session_id FROM arrived_events
UNION
SELECT tenant, session_id FROM stored_events
WHERE ts >= CAST($window_was AS TIMESTAMP) AND ts < CAST($window_is AS TIMESTAMP)
UNION
SELECT e.tenant, e.session_id
FROM stored_events AS e
JOIN catalogue_changes AS c ON c.tenant = e.tenant AND c.product_id = e.product_id
