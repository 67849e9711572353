-- snapshot_itemitem: the build's `itemitem` rows (the Parquet file $itemitem_file
-- in the store) as a snapshot's itemitem.arrow, each row also rendered as the API's JSON.
--
-- `item_json` is the row as the recommendations endpoint shows it,
-- {"product_id": ..., "rank": ..., "score": ...}, followed by a comma. A
-- product's list is one run of rows (the table's order), so the server
-- answers "top N" with one slice of this column's bytes, wrapped in [ ]
-- (the last comma dropped), instead of building objects per request.
-- The rows come in the file's own order: sql/snapshot_lists.sql points
-- into them by row number, and snapshot verification checks that it lines up.
SELECT * EXCLUDE (file_row_number),
       json_object('product_id', related_product_id, 'rank', rank, 'score', distance_score)::VARCHAR || ',' AS item_json
FROM read_parquet($itemitem_file, file_row_number = true)
