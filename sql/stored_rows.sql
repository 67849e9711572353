-- stored_rows: the rows of Parquet files in the warehouse's store ($files, paths
-- relative to the warehouse's folder): what the `events` and `itemitem` views read.
SELECT * FROM read_parquet($files)
