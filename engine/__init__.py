"""etalage's pipeline: ingest, counting and ranking in DuckDB and Numba, evaluation, publishing and the CLI.

Numba caches its compiled kernels in a per-user folder (``NUMBA_CACHE_DIR``,
default ``~/.cache/etalage/numba``), never beside the installed sources,
which may be read-only; the first build on a machine compiles them once.
"""

import os
from pathlib import Path

os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "etalage" / "numba")
)
