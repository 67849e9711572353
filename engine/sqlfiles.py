"""Runs the pipeline's ``sql/`` files against DuckDB.

Each file is one ``SELECT`` that an analyst can read and run by hand. This
module is the only place that wraps them: it names the table a file creates
and binds the ``$name`` parameters the file uses, and nothing else, so the
SQL that runs is the SQL in the file.

A view keeps no bound values, so :func:`create_view` writes each parameter
into the file's parsed tree as a literal that sqlglot makes from the Python
value, never by formatting values into SQL text.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import duckdb
import sqlglot
from sqlglot import exp

_PARAMETER = re.compile(r"\$([a-z_][a-z0-9_]*)")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")


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
    target = identifier(table or name)
    kind = "TEMPORARY TABLE" if temporary else "TABLE"
    connection.execute(f"CREATE OR REPLACE {kind} {target} AS\n{text(name)}", _bound(name, values or {}))


def query(
    connection: duckdb.DuckDBPyConnection, name: str, values: Mapping[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Run ``sql/<name>.sql``; fetch its rows from the returned connection."""
    return connection.execute(text(name), _bound(name, values or {}))


def copy(
    connection: duckdb.DuckDBPyConnection, name: str, target: Path, values: Mapping[str, Any] | None = None
) -> None:
    """Write the rows of ``sql/<name>.sql`` to the Parquet file ``target``."""
    bound = _bound(name, values or {})
    connection.execute(
        f"COPY (\n{text(name)}\n) TO $copy_target (FORMAT parquet)", {**bound, "copy_target": str(target)}
    )


def create_view(
    connection: duckdb.DuckDBPyConnection,
    name: str,
    values: Mapping[str, Any] | None = None,
    *,
    view: str | None = None,
    temporary: bool = False,
) -> None:
    """Create view ``view`` (default: ``name``) from ``sql/<name>.sql``, its parameters written in as literals."""
    bound = _bound(name, values or {})
    tree = sqlglot.parse_one(text(name), read="duckdb")
    tree = tree.transform(lambda node: _literal(bound[node.name]) if isinstance(node, exp.Placeholder) else node)
    kind = "TEMPORARY VIEW" if temporary else "VIEW"
    connection.execute(f"CREATE OR REPLACE {kind} {identifier(view or name)} AS\n{tree.sql(dialect='duckdb')}")


@contextlib.contextmanager
def reading(connection: duckdb.DuckDBPyConnection, **sources: str) -> Iterator[None]:
    """Let ``sql/`` files read each table ``name`` from ``sources[name]`` (a table or view) in this block.

    The files name their inputs (``events``, ``products``, ``itemitem``); a
    build sometimes needs them to read something else (the changed sessions'
    events, the previous catalogue, the training lists), so each is a view in
    a schema of its own, searched first. Tables the files create inside the
    block should be temporary.
    """
    schema = f"reading_{next(_schemas)}"
    searched = connection.execute("SELECT current_setting('search_path')").fetchone()[0] or "main"
    connection.execute(f"CREATE SCHEMA {schema}")
    try:
        for name, source in sources.items():
            source = f"main.{source}" if source == name else source  # the usual one: not the view itself
            connection.execute(f"CREATE VIEW {schema}.{identifier(name)} AS FROM {identifier(source)}")
        connection.execute(f"SET search_path = '{schema},{searched}'")
        yield
    finally:
        connection.execute(f"SET search_path = '{searched}'")
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


_schemas = itertools.count()


def literal(value: Any) -> str:
    """A SQL literal of ``value`` (a string, number, list, timestamp...), made by sqlglot, for SQL that cannot bind it."""
    return _literal(value).sql(dialect="duckdb")


def _literal(value: Any) -> exp.Expression:
    if isinstance(value, dt.datetime):
        return exp.cast(exp.convert(value.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP"))
    return exp.convert(list(value) if isinstance(value, tuple) else value)


def _bound(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    needed = parameters(name)
    missing = needed - set(values)
    if missing:
        msg = f"sql/{name}.sql needs parameters {sorted(missing)}"
        raise KeyError(msg)
    return {key: values[key] for key in needed}


def quoted(name: str) -> str:
    """Any name (a database named after its file, say) as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def identifier(name: str) -> str:
    """``name`` if it is a plain (or schema-qualified) table name, which may be written into SQL; else ValueError."""
    if not _IDENTIFIER.fullmatch(name):
        msg = f"{name!r} is not a plain table name"
        raise ValueError(msg)
    return name


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
