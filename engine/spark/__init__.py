"""The same pipeline on Spark: ``sql/`` translated by sqlglot, run on a Spark session."""
