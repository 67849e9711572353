"""The ``etalage.toml`` configuration: where events come from, how they map, and the algorithm knobs.

Every key, its default and its meaning live here and in the README's
configuration section (a test keeps the two in step). Unknown keys are an
error rather than a silent default, because a typo in a cron job's config
would otherwise change recommendations without anyone noticing.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import models

DIVOLTE_MAPPING: dict[str, str] = {
    "event_id": "concat_ws(':', pageViewId, eventType)",
    "ts": '"timestamp"',
    "party_id": "partyId",
    "session_id": "sessionId",
    "event_type": "eventType",
    "product_id": "nullif(regexp_extract(location, '/p/([0-9]+)/', 1), '')",
    "location": "location",
    "tenant": "regexp_extract(location, '^https?://[^/]*\\.([a-z]+)/', 1)",
    "is_duplicate": "detectedDuplicate",
    "is_corrupt": "detectedCorruption",
}
"""SQL expressions over Divolte's ``DefaultEventRecord`` columns, one per ``events`` column."""


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or names something that does not exist."""


@dataclass(frozen=True)
class EventSources:
    """Where the clickstream lives and how its columns become the ``events`` table."""

    avro: tuple[str, ...] = ()
    parquet: tuple[str, ...] = ()
    mapping: dict[str, str] = field(default_factory=lambda: dict(DIVOLTE_MAPPING))


@dataclass(frozen=True)
class Algorithms:
    """Parameters shared by the item-item algorithms."""

    top_n: int = 20
    min_support: int = 2
    max_session_items: int = 50
    look_back_days: int = 0
    event_types: tuple[str, ...] = ("pageView", "addToCart")

    def parameters(self) -> dict[str, Any]:
        """The values bound to the ``$name`` parameters of ``sql/`` files."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


@dataclass(frozen=True)
class Evaluation:
    """The time split of each build's evaluation: recommendations from before the cut-off, tested after it."""

    test_days: int = 7
    cutoff: datetime | None = None

    @property
    def enabled(self) -> bool:
        """``test_days = 0`` and no ``cutoff`` turns the evaluation off."""
        return self.cutoff is not None or self.test_days > 0


@dataclass(frozen=True)
class Visual:
    """The visual recommender: which encoder makes the image vectors, and how the Annoy forest is built and searched.

    Off unless ``enabled``: encoding a catalogue's photos costs minutes on a
    CPU the first time (later builds take the vectors from the ``embeddings``
    cache), and the catalogue needs an ``image`` column.
    """

    enabled: bool = False
    encoder: str = "efficientnet-lite0"
    model: str | None = None
    pretrained: str | None = None
    checkpoint: Path | None = None
    batch_size: int = 32
    metric: str = "angular"
    n_trees: int = 50
    search_k: int = -1
    dims: int = 128
    candidates: int = 100
    min_sessions: int = 5


@dataclass(frozen=True)
class Config:
    """A whole ``etalage.toml``; relative paths are already resolved against its folder."""

    warehouse: Path
    catalogue: Path
    events: EventSources
    algorithms: Algorithms = Algorithms()
    evaluation: Evaluation = Evaluation()
    visual: Visual = Visual()
    source: Path | None = None


def load(path: Path) -> Config:
    """Read and check ``path``; raise :class:`ConfigError` with the offending key on any problem."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        msg = f"config file {path} does not exist (create one, or run `etalage generate` for an example)"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as error:
        msg = f"{path} is not valid TOML: {error}"
        raise ConfigError(msg) from None
    return parse(raw, base=path.parent, source=path)


def parse(raw: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Build a :class:`Config` from already-parsed TOML, resolving paths against ``base``."""
    _known(raw, {"warehouse", "catalogue", "events", "algorithms", "evaluation", "visual"}, "")
    warehouse = _table(raw, "warehouse", {"path"})
    catalogue = _table(raw, "catalogue", {"path"})
    events = _table(raw, "events", {"avro", "parquet", "mapping"})
    algorithms = _table(raw, "algorithms", {f.name for f in fields(Algorithms)})
    evaluation = _table(raw, "evaluation", {f.name for f in fields(Evaluation)})
    visual = _table(raw, "visual", {f.name for f in fields(Visual)})

    mapping = dict(DIVOLTE_MAPPING)
    overrides = events.get("mapping", {})
    _known(overrides, set(DIVOLTE_MAPPING), "events.mapping.")
    for key, expression in overrides.items():
        if not isinstance(expression, str) or not expression.strip():
            msg = f"events.mapping.{key} must be a non-empty SQL expression"
            raise ConfigError(msg)
    mapping.update(overrides)

    sources = EventSources(
        avro=tuple(_globs(events, "avro", base)),
        parquet=tuple(_globs(events, "parquet", base)),
        mapping=mapping,
    )
    if not sources.avro and not sources.parquet:
        msg = "events: give at least one glob under `avro` or `parquet`"
        raise ConfigError(msg)

    return Config(
        warehouse=base / str(warehouse.get("path", "warehouse.duckdb")),
        catalogue=base / str(_required(catalogue, "catalogue", "path")),
        events=sources,
        algorithms=_algorithms(algorithms),
        evaluation=_evaluation(evaluation),
        visual=_visual(visual, base),
        source=source,
    )


def _algorithms(raw: dict[str, Any]) -> Algorithms:
    values: dict[str, Any] = {}
    for f in fields(Algorithms):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if f.name == "event_types":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                msg = "algorithms.event_types must be a non-empty list of event type names"
                raise ConfigError(msg)
            value = tuple(value)
        elif not isinstance(value, int) or isinstance(value, bool) or value < _MINIMUM[f.name]:
            msg = f"algorithms.{f.name} must be an integer >= {_MINIMUM[f.name]}, not {value!r}"
            raise ConfigError(msg)
        values[f.name] = value
    return Algorithms(**values)


def _evaluation(raw: dict[str, Any]) -> Evaluation:
    test_days = raw.get("test_days", Evaluation.test_days)
    if not isinstance(test_days, int) or isinstance(test_days, bool) or test_days < 0:
        msg = f"evaluation.test_days must be an integer >= 0, not {test_days!r}"
        raise ConfigError(msg)
    cutoff = raw.get("cutoff")
    if cutoff is not None:
        try:
            cutoff = datetime.fromisoformat(str(cutoff)).replace(tzinfo=None)
        except ValueError:
            msg = f"evaluation.cutoff must be a date or timestamp like 2026-11-01 or 2026-11-01T06:00, not {cutoff!r}"
            raise ConfigError(msg) from None
    return Evaluation(test_days=test_days, cutoff=cutoff)


_MINIMUM = {"top_n": 1, "min_support": 1, "max_session_items": 2, "look_back_days": 0}


def _visual(raw: dict[str, Any], base: Path) -> Visual:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "enabled":
            if not isinstance(value, bool):
                msg = f"visual.enabled must be true or false, not {value!r}"
                raise ConfigError(msg)
        elif key in ("encoder", "metric"):
            choices = models.ENCODERS if key == "encoder" else models.METRICS
            if value not in choices:
                msg = f"visual.{key} must be one of {', '.join(choices)}, not {value!r}"
                raise ConfigError(msg)
        elif key in ("model", "pretrained", "checkpoint"):
            if not isinstance(value, str) or not value.strip():
                msg = f"visual.{key} must be a non-empty string"
                raise ConfigError(msg)
            value = base / value if key == "checkpoint" else value
        else:
            least = _VISUAL_MINIMUM[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                msg = f"visual.{key} must be an integer >= {least}, not {value!r}"
                raise ConfigError(msg)
        values[key] = value
    visual = Visual(**values)
    if visual.dims and visual.metric == "dot":
        msg = "visual.dims (search in principal components) needs metric = \"angular\" or \"euclidean\""
        raise ConfigError(msg)
    if visual.encoder != "open_clip" and (visual.model or visual.pretrained or visual.checkpoint):
        msg = "visual.model, visual.pretrained and visual.checkpoint are for encoder = \"open_clip\""
        raise ConfigError(msg)
    return visual


_VISUAL_MINIMUM = {"batch_size": 1, "n_trees": 1, "search_k": -1, "dims": 0, "candidates": 1, "min_sessions": 0}


def _globs(events: dict[str, Any], key: str, base: Path) -> list[str]:
    value = events.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        msg = f"events.{key} must be a glob or a list of globs"
        raise ConfigError(msg)
    return [str(base / pattern) for pattern in value]


def _table(raw: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        msg = f"[{name}] must be a table"
        raise ConfigError(msg)
    _known(value, allowed, f"{name}.")
    return value


def _known(raw: dict[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        msg = f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(allowed))})"
        raise ConfigError(msg)


def _required(raw: dict[str, Any], table: str, key: str) -> Any:
    if key not in raw:
        msg = f"{table}.{key} is required"
        raise ConfigError(msg)
    return raw[key]


def example_toml(source: str = "avro") -> str:
    """The config ``etalage generate`` writes next to the example shop, reading the events as ``source``."""
    if source not in ("avro", "parquet"):
        msg = f"source must be 'avro' or 'parquet', not {source!r}"
        raise ValueError(msg)
    other = "parquet" if source == "avro" else "avro"
    return f"""\
# etalage configuration for the generated example shop. Paths are relative to this file.

[warehouse]
path = "warehouse.duckdb"

[catalogue]
path = "catalogue.parquet"

[events]
# The same events may also be in events/{other}/ as {other.capitalize()} files;
# list that glob under `{other}` instead to read them from there.
{source} = ["events/{source}/**/*.{source}"]

# [events.mapping] overrides the SQL expressions that turn Divolte's columns into
# the events table; see the README for the defaults.

[algorithms]
top_n = 20
min_support = 2
max_session_items = 50
look_back_days = 0
event_types = ["pageView", "addToCart"]

[evaluation]
# Each build also computes the lists from the events before the last
# `test_days` days and scores them on the sessions after (0 turns it off).
test_days = 7

[visual]
# Look-alike products from the pictures in the catalogue's `image` column
# (the `visual` and `visual_blend` algorithms). The first build encodes every
# picture, minutes on a CPU; later builds take the vectors from the cache.
enabled = false
encoder = "efficientnet-lite0"
metric = "angular"
"""
