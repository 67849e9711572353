"""etalage's pipeline: ingest, the item-item stage in DuckDB and Numba, evaluation, the warehouse and the CLI."""
