-- snapshot_itemitem: the build's `itemitem` rows as a snapshot's itemitem.arrow, each
-- row also rendered as the API's JSON.
--
-- `item_json` is the row as the recommendations endpoint shows it,
-- {"product_id": ..., "rank": ..., "score": ...}, followed by a comma. A
-- product's list is one run of rows (the table's order), so the server
-- answers "top N" with one slice of this column's bytes, wrapped in [ ]
-- (the last comma dropped), instead of building objects per request.
-- This file is the definition; a build renders the same JSON values faster
-- (engine/publish/item_json.py, tested against this file).
SELECT *,
       json_object('product_id', related_product_id, 'rank', rank, 'score', distance_score)::VARCHAR || ',' AS item_json
FROM itemitem
