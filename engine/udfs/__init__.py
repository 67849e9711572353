"""Numba-compiled functions that SQL alone computes slowly, and their registration in DuckDB.

Numba is imported when ``llr()`` is first called, not when a connection is
opened, so that commands that never call it (``etalage sql`` on most
queries, ``snapshots``, ``serve``) start without it.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
from duckdb import func, sqltypes


def _llr_vectorized(k11: pa.Array, k12: pa.Array, k21: pa.Array, k22: pa.Array) -> pa.Array:
    from engine.udfs.llr import llr_array

    columns = [np.asarray(k.to_numpy(zero_copy_only=False), dtype=np.int64) for k in (k11, k12, k21, k22)]
    return pa.array(llr_array(*columns))


def register(connection: duckdb.DuckDBPyConnection) -> None:
    """Make ``llr(k11, k12, k21, k22)`` callable from SQL on ``connection``."""
    connection.create_function(
        "llr",
        _llr_vectorized,
        [sqltypes.BIGINT] * 4,
        sqltypes.DOUBLE,
        type=func.PythonUDFType.ARROW,
        side_effects=False,
    )
