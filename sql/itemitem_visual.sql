-- itemitem_visual: itemitem with the look-alikes added, in itemitem's order.
--
-- Run only when `[visual] enabled`. By then `itemitem` holds the
-- click-based lists and the `visual` rows (each product's nearest pictures
-- in its own tenant, from the Annoy index), and `visual_blend` holds
-- sql/visual_blend.sql's cold-start blend of the two. The result replaces
-- `itemitem`, sorted again so that each product's list stays one run of rows
-- (the snapshot reader and analysts' range scans rely on it).
SELECT * FROM itemitem
UNION ALL
SELECT * FROM visual_blend
ORDER BY tenant, algorithm, product_id, rank
