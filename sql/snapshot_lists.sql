-- snapshot_lists: where each product's list starts in itemitem.arrow, as a snapshot's lists.arrow.
--
-- One row for every catalogue product under every algorithm (`rows` = 0
-- where the algorithm has no list for it), ordered by algorithm and then by
-- the product's place in the `products` table, which is products.arrow's
-- order. The server finds a list by arithmetic (algorithm's block *
-- products + the product's row) instead of keeping a dictionary of every
-- list, so a new snapshot is ready to serve without building one.
-- Reads `itemitem_rows`: the build's `itemitem` rows in their order, each
-- with its `row_number`, which is its row in itemitem.arrow. Each list is
-- one run of rows ranked 1, 2, ..., so it starts at its rank 1 and ends
-- where the next one starts (snapshot verification checks both). This file
-- is the definition; a build computes the same rows in engine/publish/list_index.py,
-- then moves each first_row to where the list's run lies in the snapshot's parts
-- (engine/publish/layout.py: identical lists share a run, unchanged ones stay in
-- the live snapshot's files) and adds each list's digest.
WITH starts AS (
    SELECT tenant, algorithm, product_id, row_number AS first_row
    FROM itemitem_rows
    WHERE rank = 1
),
lists AS (
    SELECT *,
           CAST(lead(first_row, 1, (SELECT count(*) FROM itemitem_rows)) OVER (ORDER BY first_row)
                - first_row AS INTEGER) AS rows
    FROM starts
)
SELECT algorithm, tenant, product_id,
       coalesce(lists.first_row, 0) AS first_row,
       coalesce(lists.rows, 0) AS rows
FROM (SELECT DISTINCT algorithm FROM itemitem_rows) AS algorithms
CROSS JOIN (SELECT rowid AS product_row, tenant, product_id FROM products) AS catalogue
LEFT JOIN lists USING (algorithm, tenant, product_id)
ORDER BY algorithm, product_row
