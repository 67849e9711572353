-- snapshot_itemitem: the `itemitem` table as a snapshot's itemitem.arrow, each row also rendered as the API's JSON.
--
-- `item_json` is the row as the recommendations endpoint shows it,
-- {"product_id": ..., "rank": ..., "score": ...}, followed by a comma. A
-- product's list is one run of rows (the table's order), so the server
-- answers "top N" with one slice of this column's bytes, wrapped in [ ]
-- (the last comma dropped), instead of building objects per request.
-- The rows come in the table's own order: sql/snapshot_lists.sql points
-- into them by `rowid`, and snapshot verification checks that it lines up.
SELECT *,
       json_object('product_id', related_product_id, 'rank', rank, 'score', distance_score)::VARCHAR || ',' AS item_json
FROM itemitem
