"""Runs the pipeline's ``sql/`` files against DuckDB.

Each file is one ``SELECT`` that an analyst can read and run by hand. This
module is the only place that wraps them: it names the table a file creates
and binds the ``$name`` parameters the file uses, and nothing else, so the
SQL that runs is the SQL in the file.

A view keeps no bound values, so :func:`create_view` writes each parameter
into the file's parsed tree as a literal that sqlglot makes from the Python
value, never by formatting values into SQL text. A build sometimes runs a
file over other inputs than the tables it names (the changed sessions'
events, the previous catalogue, the training lists): ``reading`` renames
those tables in the parsed tree, the way the Spark translation does.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

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
    reading: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
) -> None:
    """Create table ``table`` (default: ``name``) from ``sql/<name>.sql``, binding only the parameters it uses.

    ``reading`` maps tables the file reads to the ones it should read instead; ``columns`` keeps only
    those of its columns (DuckDB then computes none of the others).
    """
    target = identifier(table or name)
    kind = "TEMPORARY TABLE" if temporary else "TABLE"
    sql = _read_from(name, reading)
    if columns is not None:
        sql = f"SELECT {', '.join(map(identifier, columns))} FROM (\n{sql}\n)"
    connection.execute(f"CREATE OR REPLACE {kind} {target} AS\n{sql}", _bound(name, values or {}))


def query(
    connection: duckdb.DuckDBPyConnection,
    name: str,
    values: Mapping[str, Any] | None = None,
    *,
    reading: Mapping[str, str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Run ``sql/<name>.sql`` (reading other tables where ``reading`` says); fetch its rows from the returned connection."""
    return connection.execute(_read_from(name, reading), _bound(name, values or {}))


def scalar(result: duckdb.DuckDBPyConnection) -> Any:
    """The first value of a result's first row, where a row must be there (``count(*)``, ``max(...)``, a known key)."""
    row = result.fetchone()
    assert row is not None, "the query returned no row"
    return row[0]


def _read_from(name: str, reading: Mapping[str, str] | None) -> str:
    """The file's SQL, with the plain table names in ``reading`` replaced (each keeps its old name as its alias)."""
    if not reading:
        return text(name)
    renamed = {table: identifier(source) for table, source in reading.items()}

    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and not node.db and node.name in renamed:
            source = exp.to_table(renamed[node.name])
            source.set("alias", exp.TableAlias(this=exp.to_identifier(node.alias or node.name)))
            return source
        return node

    return _parsed(name).transform(rename).sql(dialect="duckdb")


@cache
def _parsed(name: str) -> exp.Expr:
    return sqlglot.parse_one(text(name), read="duckdb")


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


def literal(value: Any) -> str:
    """A SQL literal of ``value`` (a string, number, list, timestamp...), made by sqlglot, for SQL that cannot bind it."""
    return _literal(value).sql(dialect="duckdb")


def _literal(value: Any) -> exp.Expr:
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
