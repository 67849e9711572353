"""The ``etalage.toml`` configuration: where events come from, how they map, and the algorithm knobs.

Every key, its default and its meaning live here and in
docs/configuration.md (a test keeps the two in step). Unknown keys are an
error rather than a silent default, because a typo in a cron job's config
would otherwise change recommendations without anyone noticing.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import models
from engine.ingest.locations import REMOTE_SCHEMES, Location

DIVOLTE_MAPPING: dict[str, str] = {
    "ts": '"timestamp"',
    "party_id": "partyId",
    "session_id": "sessionId",
    "event_type": "eventType",
    "product_id": "nullif(regexp_extract(location, '/p/([0-9]+)/', 1), '')",
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


MAX_SR_WINDOW = 10
"""The widest ``sr_window``: its scale (2520) times a pair's count stays far inside the kernels' int32 counts."""


def sr_scale(window: int) -> int:
    """The least common multiple of 1..window: each 1/distance of the window is a whole multiple of 1/scale.

    The sequential rules sum their weights as these integers, so the sums are
    exact in any order (an incremental build equals one from scratch).
    """
    return math.lcm(*range(1, window + 1))


@dataclass(frozen=True)
class Algorithms:
    """Parameters shared by the item-item algorithms."""

    top_n: int = 20
    min_support: int = 2
    max_session_items: int = 200
    max_views_per_minute: int = 30
    look_back_days: int = 0
    event_types: tuple[str, ...] = ("pageView", "addToCart")
    sr_window: int = 5

    def parameters(self) -> dict[str, Any]:
        """The values bound to the ``$name`` parameters of ``sql/`` files (and the scales ``sr_window`` gives)."""
        values = {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}
        return {**values, "sr_scale": sr_scale(self.sr_window), "blend_scale": sr_scale(self.sr_window + 1)}


TUNING_GRID: dict[str, tuple[int, ...]] = {
    "min_support": (1, 2, 3, 5),
    "max_session_items": (50, 200, 0),
    "top_n": (20,),
    "look_back_days": (0, 14),
    "sr_window": (2, 5, 10),
}
"""``etalage tune``'s default grid; each key is an ``[algorithms]`` parameter."""


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

    ``cache`` is the DuckDB file of that cache; None puts ``embeddings.duckdb``
    beside the warehouse (see :func:`engine.pipeline.visual_stage.cache_path`).
    """

    enabled: bool = False
    encoder: str = "efficientnet-lite0"
    model: str | None = None
    pretrained: str | None = None
    checkpoint: Path | None = None
    cache: Path | None = None
    batch_size: int = 32
    metric: str = "angular"
    n_trees: int = 50
    search_k: int = -1
    dims: int = 128
    candidates: int = 100
    neighbours: int = 32
    min_sessions: int = 5


@dataclass(frozen=True)
class Snapshots:
    """Where builds publish the snapshots the server reads, how many to keep, and the evaluation gate."""

    root: Path = Path("snapshots")
    keep: int = 5
    gate_algorithm: str = "auto"
    max_mrr_drop: float = 0.05


CLICK_ALGORITHMS = (
    "cooccurrence",
    "jaccard",
    "llr",
    "popular",
    "sequence_blend",
    "sequential_rules",
    "sequential_rules_both",
    "transitions",
    "transitions_both",
)
"""Algorithms every build computes from the clickstream."""
VISUAL_ALGORITHMS = ("visual", "visual_blend")
"""Algorithms a build computes only with ``[visual] enabled``: look-alikes, and the cold-start blend of llr and look-alikes."""
ALGORITHMS = CLICK_ALGORITHMS + VISUAL_ALGORITHMS
"""Every algorithm a snapshot can hold: what the gate may watch and an experiment variant may serve."""
AUTO = "auto"
"""``snapshots.gate_algorithm``'s default: each build serves (and gates on) the algorithm its evaluation scores best."""


@dataclass(frozen=True)
class Variant:
    """One arm of the experiment: which algorithm answers, and which one fills in when it has no list."""

    name: str
    algorithm: str
    weight: float = 1.0
    fallback: str | None = "popular"


@dataclass(frozen=True)
class Experiment:
    """The A/B test the gateway runs; visitors are hashed into variants the way PlanOut does.

    ``salt`` defaults to ``name``: renaming an experiment reshuffles its
    visitors, editing another part of the config does not.
    """

    name: str = "recommendations"
    salt: str | None = None
    variants: tuple[Variant, ...] = (Variant("llr", "llr"),)

    @property
    def experiment_salt(self) -> str:
        return self.salt or self.name


@dataclass(frozen=True)
class Serving:
    """``etalage serve``: where it listens, how often it looks for a new snapshot, where exposures go."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    reload_seconds: float = 1.0
    exposures: Location = Path("exposures")
    flush_seconds: float = 5.0
    max_limit: int = 100
    max_upload_bytes: int = 10_000_000
    max_upload_pixels: int = 40_000_000
    decode_seconds: float = 5.0
    verify_seconds: float = 300.0
    max_header_bytes: int = 16_384


@dataclass(frozen=True)
class Config:
    """A whole ``etalage.toml``; relative paths are already resolved against its folder."""

    warehouse: Path
    catalogue: Location
    events: EventSources
    algorithms: Algorithms = Algorithms()
    evaluation: Evaluation = Evaluation()
    visual: Visual = Visual()
    snapshots: Snapshots = Snapshots()
    serving: Serving = Serving()
    experiment: Experiment = Experiment()
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
    _known(
        raw,
        {
            "warehouse",
            "catalogue",
            "events",
            "algorithms",
            "evaluation",
            "visual",
            "snapshots",
            "serving",
            "experiment",
        },
        "",
    )
    warehouse = _table(raw, "warehouse", {"path"})
    catalogue = _table(raw, "catalogue", {"path"})
    events = _table(raw, "events", {"avro", "parquet", "mapping"})
    algorithms = _table(raw, "algorithms", {f.name for f in fields(Algorithms)})
    evaluation = _table(raw, "evaluation", {f.name for f in fields(Evaluation)})
    visual = _table(raw, "visual", {f.name for f in fields(Visual)})
    snapshots = _table(raw, "snapshots", {f.name for f in fields(Snapshots)})
    serving = _table(raw, "serving", {f.name for f in fields(Serving)})
    experiment = _table(raw, "experiment", {f.name for f in fields(Experiment)})

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

    config = Config(
        warehouse=base / str(warehouse.get("path", "warehouse.duckdb")),
        catalogue=_location(_required(catalogue, "catalogue", "path"), base, "catalogue.path"),
        events=sources,
        algorithms=_algorithms(algorithms),
        evaluation=_evaluation(evaluation),
        visual=_visual(visual, base),
        snapshots=_snapshots(snapshots, base),
        serving=_serving(serving, base),
        experiment=_experiment(experiment),
        source=source,
    )
    _visual_algorithms_enabled(config)
    if config.snapshots.gate_algorithm == AUTO and not config.evaluation.enabled:
        msg = (
            'snapshots.gate_algorithm = "auto" serves the algorithm the evaluation scores best, but evaluation.test_days '
            "is 0 and no evaluation.cutoff is set: hold some days out, or name the algorithm to serve"
        )
        raise ConfigError(msg)
    return config


def _visual_algorithms_enabled(config: Config) -> None:
    """Refuse a gate or variant on ``visual``/``visual_blend`` that builds do not compute, or pictures out of reach."""
    if config.visual.enabled:
        if isinstance(config.catalogue, str):
            msg = f"[visual] reads pictures beside the catalogue: catalogue.path must be local, not {config.catalogue}"
            raise ConfigError(msg)
        return
    named = [("snapshots.gate_algorithm", config.snapshots.gate_algorithm)]
    for index, variant in enumerate(config.experiment.variants):
        named += [
            (f"experiment.variants[{index}].algorithm", variant.algorithm),
            (f"experiment.variants[{index}].fallback", variant.fallback),
        ]
    for key, algorithm in named:
        if algorithm in VISUAL_ALGORITHMS:
            msg = f"{key} is {algorithm!r}, which builds compute only with `[visual] enabled = true`"
            raise ConfigError(msg)


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
        elif f.name == "sr_window" and value > MAX_SR_WINDOW:
            msg = f"algorithms.sr_window must be an integer from 1 to {MAX_SR_WINDOW} (steps ahead), not {value!r}"
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


def _snapshots(raw: dict[str, Any], base: Path) -> Snapshots:
    keep = raw.get("keep", Snapshots.keep)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        msg = f"snapshots.keep must be an integer >= 1, not {keep!r}"
        raise ConfigError(msg)
    algorithm = raw.get("gate_algorithm", Snapshots.gate_algorithm)
    if algorithm not in (AUTO, *ALGORITHMS):
        msg = f"snapshots.gate_algorithm must be {AUTO!r} or one of {', '.join(ALGORITHMS)}, not {algorithm!r}"
        raise ConfigError(msg)
    drop = raw.get("max_mrr_drop", Snapshots.max_mrr_drop)
    if not isinstance(drop, (int, float)) or isinstance(drop, bool) or not 0 <= drop <= 1:
        msg = f"snapshots.max_mrr_drop must be a fraction between 0 and 1, not {drop!r}"
        raise ConfigError(msg)
    root = raw.get("root", str(Snapshots.root))
    if not isinstance(root, str) or not root:
        msg = "snapshots.root must be a folder path"
        raise ConfigError(msg)
    return Snapshots(root=base / root, keep=keep, gate_algorithm=algorithm, max_mrr_drop=float(drop))


_SERVING_INTEGERS = {
    "port": 65535,
    "workers": 10_000,
    "max_limit": 10_000,
    "max_upload_bytes": 1 << 30,
    "max_upload_pixels": 89_478_485,
    "max_header_bytes": 1 << 20,
}  # Pillow refuses more pixels than this as a possible bomb anyway
"""The integer keys of ``[serving]`` and the largest value each takes."""


def _serving(raw: dict[str, Any], base: Path) -> Serving:
    values: dict[str, Any] = {"exposures": base / Serving.exposures}
    for f in fields(Serving):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if f.name == "host" and not (isinstance(value, str) and value):
            raise ConfigError("serving.host must be a host name or address")
        if f.name == "exposures":
            if not (isinstance(value, str) and value):
                raise ConfigError("serving.exposures must be a folder path or URI")
            value = _location(value, base, "serving.exposures")
        if f.name in _SERVING_INTEGERS and not (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _SERVING_INTEGERS[f.name]
        ):
            raise ConfigError(f"serving.{f.name} must be a positive integer, not {value!r}")
        if f.name.endswith("_seconds") and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        ):
            raise ConfigError(f"serving.{f.name} must be a positive number of seconds, not {value!r}")
        values[f.name] = float(value) if f.name.endswith("_seconds") else value
    return Serving(**values)


def _experiment(raw: dict[str, Any]) -> Experiment:
    name = raw.get("name", Experiment.name)
    salt = raw.get("salt")
    for key, value in (("name", name), ("salt", salt)):
        if value is not None and not (isinstance(value, str) and value):
            raise ConfigError(f"experiment.{key} must be a non-empty string")
    if "variants" not in raw:
        return Experiment(name=name, salt=salt)
    variants = raw["variants"]
    if not isinstance(variants, list) or not variants:
        raise ConfigError("experiment.variants must be a non-empty list of [[experiment.variants]] tables")
    parsed = []
    for index, variant in enumerate(variants):
        where = f"experiment.variants[{index}]"
        if not isinstance(variant, dict):
            raise ConfigError(f"{where} must be a table")
        _known(variant, {f.name for f in fields(Variant)}, f"{where}.")
        label = variant.get("name")
        if not (isinstance(label, str) and label):
            raise ConfigError(f"{where}.name is required")
        for key in ("algorithm", "fallback"):
            value = variant.get(key, "popular" if key == "fallback" else None)
            if key == "fallback" and value == "":
                continue
            if value not in ALGORITHMS:
                raise ConfigError(f"{where}.{key} must be one of {', '.join(ALGORITHMS)}, not {value!r}")
        weight = variant.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
            raise ConfigError(f"{where}.weight must be a positive number, not {weight!r}")
        parsed.append(Variant(label, variant["algorithm"], float(weight), variant.get("fallback", "popular") or None))
    if len({v.name for v in parsed}) != len(parsed):
        raise ConfigError("experiment.variants: two variants have the same name")
    return Experiment(name=name, salt=salt, variants=tuple(parsed))


_MINIMUM = {
    "top_n": 1,
    "min_support": 1,
    "max_session_items": 0,
    "max_views_per_minute": 0,
    "look_back_days": 0,
    "sr_window": 1,
}


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
        elif key in ("model", "pretrained", "checkpoint", "cache"):
            if not isinstance(value, str) or not value.strip():
                msg = f"visual.{key} must be a non-empty string"
                raise ConfigError(msg)
            value = base / value if key in ("checkpoint", "cache") else value
        else:
            least = _VISUAL_MINIMUM[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                msg = f"visual.{key} must be an integer >= {least}, not {value!r}"
                raise ConfigError(msg)
        values[key] = value
    visual = Visual(**values)
    if visual.dims and visual.metric == "dot":
        msg = 'visual.dims (search in principal components) needs metric = "angular" or "euclidean"'
        raise ConfigError(msg)
    if visual.encoder != "open_clip" and (visual.model or visual.pretrained or visual.checkpoint):
        msg = 'visual.model, visual.pretrained and visual.checkpoint are for encoder = "open_clip"'
        raise ConfigError(msg)
    return visual


_VISUAL_MINIMUM = {
    "batch_size": 1,
    "n_trees": 1,
    "search_k": -1,
    "dims": 0,
    "candidates": 1,
    "neighbours": 0,
    "min_sessions": 0,
}


def _globs(events: dict[str, Any], key: str, base: Path) -> list[str]:
    value = events.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        msg = f"events.{key} must be a glob or a list of globs"
        raise ConfigError(msg)
    return [str(_location(pattern, base, f"events.{key}")) for pattern in value]


def _location(value: Any, base: Path, key: str) -> Location:
    """A path (relative to ``base``) or URI from the config: ``file://`` becomes a path, a remote URI stays as written.

    Raises:
        ConfigError: the value is not a string, or its scheme is none etalage reads.
    """
    if not isinstance(value, str) or not value:
        msg = f"{key} must be a path or URI"
        raise ConfigError(msg)
    if "://" not in value:
        return base / value
    scheme, rest = value.split("://", 1)
    if scheme.lower() == "file":
        return Path(unquote(rest))
    if scheme.lower() not in REMOTE_SCHEMES or not rest.split("/", 1)[0]:
        msg = (
            f"{key} = {value!r}: etalage reads paths and file://, {', '.join(s + '://' for s in REMOTE_SCHEMES)} "
            "URIs with a bucket or host (s3a:// is s3:// here)"
        )
        raise ConfigError(msg)
    return value


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


def example_toml(source: str = "avro", visual: bool = False) -> str:
    """The config ``etalage generate`` writes next to the example shop, reading the events as ``source``.

    ``visual`` turns the visual stage on (``etalage demo`` does; the encoder
    then needs the ``visual`` extra).
    """
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
# the events table; see docs/configuration.md for the defaults.

[algorithms]
top_n = 20
min_support = 2
# The bot rules, for training and test sessions alike: a session with more distinct
# products, or with more product views in one clock minute, is dropped (0: no limit).
max_session_items = 200
max_views_per_minute = 30
look_back_days = 0
event_types = ["pageView", "addToCart"]
# How many steps ahead the sequential rules look (1..10).
sr_window = 5

[evaluation]
# Each build also computes the lists from the events before the last
# `test_days` days and scores them on the sessions after (0 turns it off).
test_days = 7

[visual]
# Look-alike products from the pictures in the catalogue's `image` column
# (the `visual` and `visual_blend` algorithms). The first build encodes every
# picture, minutes on a CPU; later builds take the vectors from the cache.
enabled = {"true" if visual else "false"}
encoder = "efficientnet-lite0"
metric = "angular"

[snapshots]
# Each build publishes a snapshot folder here for the server; `current` points at the live one.
root = "snapshots"
keep = 5
# The algorithm the recommendations route serves: "auto" serves the one with the
# best MRR@20 on each build's held-out days, or name one. A build whose MRR@20 for
# it falls more than max_mrr_drop (a fraction) below the live snapshot's served
# algorithm is not published, unless `etalage build --force`.
gate_algorithm = "auto"
max_mrr_drop = 0.05

[serving]
host = "127.0.0.1"
port = 8000
workers = 2
# How often each server process looks for a newly published snapshot.
reload_seconds = 1.0
# The gateway appends what it showed to whom here (Parquet); builds read it into `exposures`.
exposures = "exposures"
flush_seconds = 5.0
max_limit = 100
# Photo uploads (POST /v1/{{tenant}}/images/similar): larger bodies or pictures get 413.
max_upload_bytes = 10000000
max_upload_pixels = 40000000
# An upload that takes longer to decode gets 503; each worker re-checks its snapshot's checksums this often.
decode_seconds = 5.0
verify_seconds = 300.0
# A request whose URL and headers are larger gets 431 (or 414 for the URL alone).
max_header_bytes = 16384

[experiment]
# Visitors are hashed into variants as PlanOut does (the salt is the name unless `salt` is set).
name = "recommendations"

[[experiment.variants]]
name = "llr"
algorithm = "llr"
weight = 1
fallback = "popular"

[[experiment.variants]]
name = "{"visual_blend" if visual else "cooccurrence"}"
algorithm = "{"visual_blend" if visual else "cooccurrence"}"
weight = 1
fallback = "popular"
"""
