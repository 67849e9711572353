"""Runs the pipeline's ``sql/`` files against DuckDB.

Each file is one ``SELECT`` that an analyst can read and run by hand. This
module is the only place that wraps them: it names the table a file creates
and binds the ``$name`` parameters the file uses, and nothing else, so the
SQL that runs is the SQL in the file.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any, Mapping

import duckdb

_PARAMETER = re.compile(r"\$([a-z_][a-z0-9_]*)")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


@cache
def text(name: str) -> str:
    """The SQL of ``sql/<name>.sql``."""
    return resources.files("sql").joinpath(f"{name}.sql").read_text()


def names() -> list[str]:
    """Every pipeline step in ``sql/``, by file name without ``.sql``."""
    return sorted(p.name[:-4] for p in resources.files("sql").iterdir() if p.name.endswith(".sql"))


def parameters(name: str) -> set[str]:
    """The ``$name`` parameters that ``sql/<name>.sql`` uses (comments included, harmlessly)."""
    return set(_PARAMETER.findall(_without_comments(text(name))))


def create_table(
    connection: duckdb.DuckDBPyConnection,
    name: str,
    values: Mapping[str, Any] | None = None,
    *,
    table: str | None = None,
    temporary: bool = False,
) -> None:
    """Create table ``table`` (default: ``name``) from ``sql/<name>.sql``, binding only the parameters it uses."""
    target = _identifier(table or name)
    kind = "TEMPORARY TABLE" if temporary else "TABLE"
    connection.execute(f"CREATE OR REPLACE {kind} {target} AS\n{text(name)}", _bound(name, values or {}))


def query(
    connection: duckdb.DuckDBPyConnection, name: str, values: Mapping[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Run ``sql/<name>.sql``; fetch its rows from the returned connection."""
    return connection.execute(text(name), _bound(name, values or {}))


def _bound(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    needed = parameters(name)
    missing = needed - set(values)
    if missing:
        msg = f"sql/{name}.sql needs parameters {sorted(missing)}"
        raise KeyError(msg)
    return {key: values[key] for key in needed}


def _identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        msg = f"{name!r} is not a plain table name"
        raise ValueError(msg)
    return name


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
