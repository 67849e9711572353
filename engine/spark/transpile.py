"""The pipeline's ``sql/`` files in Spark SQL, translated by sqlglot from DuckDB's dialect.

The files are written in DuckDB's dialect but kept portable, so sqlglot
carries nearly everything on its own: ``QUALIFY`` becomes a subquery,
``list_contains`` becomes ``array_contains``, DuckDB's ``NULLS LAST`` default
is spelled out, and ``$name`` parameters become Spark's ``:name`` markers.
What sqlglot cannot carry, because it is etalage's own or because the two
engines compute it differently, is rewritten here and nowhere else
(:data:`REWRITES` lists it; docs/spark.md repeats it):

* ``llr(k11, k12, k21, k22)``, the Numba UDF, becomes the same arithmetic as
  a SQL expression (Mahout's ``xLogX`` entropies, the same order of
  operations, round-off below zero clamped to 0). Spark's ``ln`` is Java's
  ``StrictMath.log``, which may differ from the C library's ``log`` in the
  last bit, so a score can differ by a few ulp; nothing else can.
* A number with a decimal point (``1.0``) is a ``DOUBLE``. DuckDB turns
  arithmetic on such DECIMAL literals into DOUBLE (``1.0 / rank``,
  ``avg(1.0)``); Spark would keep exact DECIMALs and return other types.
* ``CAST(... AS JSON)`` becomes a cast to ``STRING``: Spark has no JSON type,
  and sqlglot's ``to_json`` would quote the text a second time.
* A common table expression's ``MATERIALIZED`` or ``NOT MATERIALIZED`` is
  dropped: it is advice to DuckDB's planner, which Spark's SQL cannot parse.
* Table names can be renamed (``tables``): Spark's temporary views live in no
  schema, so the evaluation's ``holdout.itemitem`` needs a plain name there.

Parameter values are bound by replacing each marker in the parsed tree with
a literal that sqlglot makes from the Python value (``exp.convert``), never
by formatting values into SQL text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import cache
from typing import Any

import sqlglot
from sqlglot import exp

from engine import sqlfiles

REWRITES = {
    "llr": "the Numba UDF llr(k11, k12, k21, k22) becomes Mahout's xLogX arithmetic as a SQL expression (ln is StrictMath.log)",
    "decimal literals": "1.0 is a DOUBLE, as DuckDB computes with it, not an exact Spark DECIMAL",
    "json": "CAST(x AS JSON) becomes CAST(x AS STRING): Spark has no JSON type",
    "materialization": "a CTE's [NOT] MATERIALIZED, DuckDB planner advice, is dropped",
    "tables": "table names are renamed where the caller asks (Spark's temporary views have no schema)",
}
"""What sqlglot cannot carry from DuckDB to Spark, and how this module carries it."""

INCREMENTAL = (
    "catalogue_changes",
    "changed_sessions",
    "changed_events",
    "first_changed_event",
    "events_before",
    "counted_changes",
    "counted_steps",
    "new_items",
    "baskets",
    "step_lists",
    "kept_item_counts",
    "holdout_sessions",
    "holdout_events",
    "test_sessions",
    "test_sessions_by_delta",
    "training_changes",
    "test_transitions",
)
DUCKDB_ONLY: dict[str, str] = {
    **dict.fromkeys(INCREMENTAL, "the incremental counting of a DuckDB build; a Spark build counts everything"),
    "stored_rows": "the warehouse's views over its store; Spark writes its tables as Parquet folders",
    "snapshot_itemitem": "writes a snapshot file, and only a DuckDB build publishes snapshots",
    "snapshot_lists": "writes a snapshot file, and only a DuckDB build publishes snapshots",
}
"""The ``sql/`` files that only a DuckDB build runs, and why; every other file runs on Spark too."""

_LLR = """
CASE WHEN {row} + {column} < {matrix} THEN CAST(0 AS DOUBLE)
     ELSE 2 * ({row} + {column} - {matrix}) END
"""
"""Mahout's ``logLikelihoodRatio``, as :func:`engine.udfs.llr.llr` computes it, over three entropies."""

_X_LOG_X = "CASE WHEN x = 0 THEN CAST(0 AS DOUBLE) ELSE x * ln(x) END"


def spark_sql(
    name: str,
    values: Mapping[str, Any] | None = None,
    *,
    tables: Mapping[str, str] | None = None,
    pretty: bool = False,
) -> str:
    """``sql/<name>.sql`` in Spark SQL.

    Args:
        name: the file's name without ``.sql``.
        values: parameter values to bind as literals; ``None`` keeps the
            parameters as Spark's named markers (``:min_support``), as
            ``etalage transpile`` prints them.
        tables: table names to replace, e.g. ``{"holdout.itemitem": "holdout_itemitem"}``;
            a key without a schema matches the bare name only.
        pretty: format the SQL on several lines (comments are kept either way).

    Raises:
        KeyError: ``values`` lacks a parameter the file uses.
    """
    tree = _parse(name)
    if values is not None:
        tree = bind(tree, values, f"sql/{name}.sql")
    if tables:
        tree = _rename(tree, tables)
    return tree.sql(dialect="spark", pretty=pretty)


def expression(sql: str) -> str:
    """One DuckDB expression (a config mapping) in Spark SQL, with the same rewrites as the files."""
    return _portable(sqlglot.parse_one(sql, read="duckdb")).sql(dialect="spark")


def column(expression_sql: str, sql_type: str, name: str) -> str:
    """``CAST((expression) AS type) AS name`` in Spark SQL: one mapped ``events`` column (see :mod:`engine.ingest.events`)."""
    tree = exp.cast(sqlglot.parse_one(expression_sql, read="duckdb"), exp.DataType.build(sql_type, dialect="duckdb"))
    return exp.alias_(_portable(tree), name).sql(dialect="spark")


def bind(tree: exp.Expr, values: Mapping[str, Any], where: str = "the query") -> exp.Expr:
    """Replace every ``$name`` / ``:name`` marker in ``tree`` by a literal of ``values[name]``."""
    names = {node.name for node in tree.find_all(exp.Placeholder)}
    missing = sorted(names - set(values))
    if missing:
        msg = f"{where} needs parameters {missing}"
        raise KeyError(msg)
    return tree.transform(lambda node: _literal(values[node.name]) if isinstance(node, exp.Placeholder) else node)


def _literal(value: Any) -> exp.Expr:
    """A Spark literal for a parameter value; timestamps are wall-clock (TIMESTAMP_NTZ), like DuckDB's TIMESTAMP."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return exp.cast(exp.convert(value.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP_NTZ", dialect="spark"))
    if isinstance(value, tuple):
        value = list(value)
    return exp.convert(value)


@cache
def _parse(name: str) -> exp.Expr:
    # One statement per file is the sql/ convention; a second one would be silently dropped by parse_one.
    statements = [s for s in sqlglot.parse(sqlfiles.text(name), read="duckdb") if s is not None]
    if len(statements) != 1:
        msg = f"sql/{name}.sql holds {len(statements)} statements; a pipeline file is one SELECT"
        raise ValueError(msg)
    return _portable(statements[0])


def _portable(tree: exp.Expr) -> exp.Expr:
    """Apply :data:`REWRITES` (except table renames) to a parsed DuckDB tree; returns a new tree."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "llr":
            return _llr(*node.expressions)
        if isinstance(node, exp.Literal) and node.is_number and not node.is_int:
            return exp.cast(node.copy(), exp.DataType.build("DOUBLE"))
        if isinstance(node, exp.Cast) and node.to.is_type("json"):
            return exp.cast(node.this.copy(), exp.DataType.build("VARCHAR"))
        if isinstance(node, exp.CTE) and node.args.get("materialized") is not None:
            node.set("materialized", None)
        return node

    return tree.copy().transform(rewrite)


def _llr(*arguments: exp.Expression) -> exp.Expression:
    if len(arguments) != 4:
        msg = f"llr takes 4 arguments (k11, k12, k21, k22), not {len(arguments)}"
        raise ValueError(msg)
    k11, k12, k21, k22 = (_operand(a) for a in arguments)
    row = _entropy(exp.Add(this=k11.copy(), expression=k12.copy()), exp.Add(this=k21.copy(), expression=k22.copy()))
    column = _entropy(exp.Add(this=k11.copy(), expression=k21.copy()), exp.Add(this=k12.copy(), expression=k22.copy()))
    matrix = _entropy(k11, k12, k21, k22)
    template = sqlglot.parse_one(_LLR.format(row="__row", column="__column", matrix="__matrix"), read="duckdb")
    parts = {"__row": row, "__column": column, "__matrix": matrix}
    return exp.paren(
        template.transform(lambda n: parts[n.name].copy() if isinstance(n, exp.Column) and n.name in parts else n),
        copy=False,
    )


def _entropy(*counts: exp.Expression) -> exp.Expression:
    """``xLogX(sum) - xLogX(c1) - xLogX(c2) ...``, subtracted left to right as Mahout does."""
    total = counts[0].copy()
    for count in counts[1:]:
        total = exp.Add(this=total, expression=count.copy())
    result: exp.Expression = _x_log_x(total)
    for count in counts:
        result = exp.Sub(this=result, expression=_x_log_x(count))
    return exp.paren(result, copy=False)


def _x_log_x(x: exp.Expression) -> exp.Expression:
    """``x * ln(x)``, 0 for x = 0: Mahout's ``LogLikelihood.xLogX``."""
    template = sqlglot.parse_one(_X_LOG_X, read="duckdb")
    operand = _operand(x)
    return template.transform(lambda n: operand.copy() if isinstance(n, exp.Column) and n.name == "x" else n)


def _operand(x: exp.Expression) -> exp.Expression:
    """``x`` in parentheses unless it is a plain column or already parenthesised."""
    return x.copy() if isinstance(x, (exp.Column, exp.Paren)) else exp.paren(x.copy(), copy=False)


def _rename(tree: exp.Expr, tables: Mapping[str, str]) -> exp.Expr:
    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table):
            qualified = f"{node.db}.{node.name}" if node.db else node.name
            if qualified in tables:
                return exp.Table(this=exp.to_identifier(tables[qualified]), alias=node.args.get("alias"))
        return node

    return tree.transform(rename)
