"""The ``etalage.toml`` configuration: where events come from, how they map, and the algorithm knobs.

Each table is a msgspec Struct that declares its keys' types, bounds and
defaults once; msgspec reads the TOML into them and :func:`_refusal` words its
errors from the same declarations, so a check cannot drift from its message.
Unknown keys are an error rather than a silent default, because a typo in a
cron job's config would otherwise change recommendations without anyone
noticing. What one key cannot say alone (how keys combine, which URI schemes
etalage reads) is checked by hand in :func:`_check` and :func:`_location`.
docs/configuration.md documents every key (a test keeps the two in step).
"""

from __future__ import annotations

import math
import re
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args, get_type_hints
from urllib.parse import unquote

import msgspec
from msgspec import Meta, Struct, field
from msgspec import inspect as schema
from msgspec.structs import asdict, force_setattr, replace

from engine.ingest.locations import REMOTE_SCHEMES, Location
from models import Encoder, Metric

NonEmpty = Annotated[str, Meta(min_length=1)]
Positive = Annotated[int, Meta(ge=1)]
Count = Annotated[int, Meta(ge=0)]
"""An integer where 0 means none (or no limit)."""
Seconds = Annotated[float, Meta(gt=0)]

MappedColumn = Literal[
    "ts", "party_id", "session_id", "event_type", "product_id", "tenant", "is_duplicate", "is_corrupt"
]  # fmt: skip
"""The ``events`` columns a mapping gives an expression for: the keys of ``[events.mapping]``."""
DIVOLTE_MAPPING: dict[MappedColumn, str] = {
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


class EventSources(Struct, frozen=True, forbid_unknown_fields=True):
    """Where the clickstream lives and how its columns become the ``events`` table.

    :func:`parse` resolves the globs (paths or URIs) and lays the config's
    mapping over :data:`DIVOLTE_MAPPING`, so every column has an expression.
    """

    avro: tuple[NonEmpty, ...] = ()
    parquet: tuple[NonEmpty, ...] = ()
    mapping: dict[MappedColumn, NonEmpty] = field(default_factory=lambda: dict(DIVOLTE_MAPPING))


MAX_SR_WINDOW = 10
"""The widest ``sr_window``: its scale (2520) times a pair's count stays far inside the kernels' int32 counts."""


def sr_scale(window: int) -> int:
    """The least common multiple of 1..window: each 1/distance of the window is a whole multiple of 1/scale.

    The sequential rules sum their weights as these integers, so the sums are
    exact in any order (an incremental build equals one from scratch).
    """
    return math.lcm(*range(1, window + 1))


ClickAlgorithm = Literal[
    "cooccurrence",
    "jaccard",
    "llr",
    "popular",
    "sequence_blend",
    "sequential_rules",
    "sequential_rules_both",
    "transitions",
    "transitions_both",
]
VisualAlgorithm = Literal["visual", "visual_blend"]
Algorithm = Literal[ClickAlgorithm, VisualAlgorithm]
CLICK_ALGORITHMS: tuple[ClickAlgorithm, ...] = get_args(ClickAlgorithm)
"""Algorithms a build can compute from the clickstream (those ``algorithms.compute`` names; all by default)."""
VISUAL_ALGORITHMS: tuple[VisualAlgorithm, ...] = get_args(VisualAlgorithm)
"""Algorithms a build computes only with ``[visual] enabled``: look-alikes, and the cold-start blend of llr and look-alikes."""
ALGORITHMS: tuple[Algorithm, ...] = CLICK_ALGORITHMS + VISUAL_ALGORITHMS
"""Every algorithm a snapshot can hold: what the gate may watch and an experiment variant may serve."""
VisitBlend = Literal["visit_blend"]
VISIT_BLEND: VisitBlend = "visit_blend"
"""The session route's list: the served algorithm's lists of a visit's products, blended by recency and rank.

Its ``evaluation`` row, and what an experiment variant may serve besides a snapshot's lists."""


class Algorithms(Struct, frozen=True, forbid_unknown_fields=True):
    """Which click algorithms a build computes, and the parameters they share.

    ``compute`` defaults to all of them, so that each build's evaluation
    compares them all; naming fewer skips the counts, lists and snapshot rows
    only the others need (a shop that serves ``llr`` alone builds several
    times faster).
    """

    compute: Annotated[tuple[ClickAlgorithm, ...], Meta(min_length=1)] = CLICK_ALGORITHMS
    top_n: Positive = 20
    min_support: Positive = 2
    max_session_items: Count = 200
    max_views_per_minute: Count = 30
    look_back_days: Count = 0
    event_types: Annotated[tuple[NonEmpty, ...], Meta(min_length=1)] = ("pageView", "addToCart")
    sr_window: Annotated[int, Meta(ge=1, le=MAX_SR_WINDOW)] = 5

    def parameters(self) -> dict[str, Any]:
        """The values bound to the ``$name`` parameters of ``sql/`` files (and the scales ``sr_window`` gives)."""
        values = {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(self).items()}
        return {**values, "sr_scale": sr_scale(self.sr_window), "blend_scale": sr_scale(self.sr_window + 1)}


TUNING_GRID: dict[str, tuple[int, ...]] = {
    "min_support": (1, 2, 3, 5),
    "max_session_items": (50, 200, 0),
    "top_n": (20,),
    "look_back_days": (0, 14),
    "sr_window": (2, 5, 10),
}
"""``etalage tune``'s default grid; each key is an ``[algorithms]`` parameter."""


class Evaluation(Struct, frozen=True, forbid_unknown_fields=True):
    """The time split of each build's evaluation: recommendations from before the cut-off, tested after it."""

    test_days: Count = 7
    cutoff: datetime | None = None

    @property
    def enabled(self) -> bool:
        """``test_days = 0`` and no ``cutoff`` turns the evaluation off."""
        return self.cutoff is not None or self.test_days > 0


class Visual(Struct, frozen=True, forbid_unknown_fields=True):
    """The visual recommender: which encoder makes the image vectors, and how the Annoy forest is built and searched.

    Off unless ``enabled``: encoding a catalogue's photos costs minutes on a
    CPU the first time (later builds take the vectors from the ``embeddings``
    cache), and the catalogue needs an ``image`` column.

    ``cache`` is the DuckDB file of that cache; None puts ``embeddings.duckdb``
    beside the warehouse (see :func:`engine.pipeline.visual_stage.cache_path`).
    """

    enabled: bool = False
    encoder: Encoder = "efficientnet-lite0"
    model: NonEmpty | None = None
    pretrained: NonEmpty | None = None
    checkpoint: Path | None = None
    cache: Path | None = None
    batch_size: Positive = 32
    metric: Metric = "angular"
    n_trees: Positive = 50
    search_k: Annotated[int, Meta(ge=-1)] = -1
    dims: Count = 128
    candidates: Positive = 100
    neighbours: Count = 32
    min_sessions: Count = 5


AUTO: Final = "auto"
"""``snapshots.gate_algorithm``'s default: each build serves (and gates on) the algorithm its evaluation scores best."""


class Snapshots(Struct, frozen=True, forbid_unknown_fields=True):
    """Where builds publish the snapshots the server reads, how many to keep, and the evaluation gate."""

    root: Path = Path("snapshots")
    keep: Positive = 5
    gate_algorithm: Literal["auto", Algorithm] = AUTO
    max_mrr_drop: Annotated[float, Meta(ge=0, le=1)] = 0.05


class Variant(Struct, frozen=True, forbid_unknown_fields=True):
    """One arm of the experiment: which algorithm answers, and which one fills in when it has no list.

    ``visit_blend`` answers with the session route's list for the visit so
    far (the gateway's ``visit`` and the product), which falls back to
    ``popular`` as that route does. The config writes no fallback as ``""``
    (TOML has no null); the variant holds it as None.
    """

    name: NonEmpty
    algorithm: Literal[Algorithm, VisitBlend]
    weight: Annotated[float, Meta(gt=0)] = 1.0
    fallback: Literal[Algorithm, ""] | None = "popular"

    def __post_init__(self) -> None:
        if self.fallback == "":
            force_setattr(self, "fallback", None)


class Experiment(Struct, frozen=True, forbid_unknown_fields=True):
    """The A/B test the gateway runs; visitors are hashed into variants the way PlanOut does.

    ``salt`` defaults to ``name``: renaming an experiment reshuffles its
    visitors, editing another part of the config does not.
    """

    name: NonEmpty = "recommendations"
    salt: NonEmpty | None = None
    variants: Annotated[tuple[Variant, ...], Meta(min_length=1)] = (Variant("llr", "llr"),)

    @property
    def experiment_salt(self) -> str:
        return self.salt or self.name


class Serving(Struct, frozen=True, forbid_unknown_fields=True):
    """``etalage serve``: where it listens, how often it looks for a new snapshot, where exposures go.

    ``exposures`` is a folder path or a URI; :func:`parse` makes a path absolute.
    """

    host: NonEmpty = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    workers: Annotated[int, Meta(ge=1, le=10_000)] = 2
    reload_seconds: Seconds = 1.0
    exposures: NonEmpty = "exposures"
    flush_seconds: Seconds = 5.0
    max_limit: Annotated[int, Meta(ge=1, le=10_000)] = 100
    max_upload_bytes: Annotated[int, Meta(ge=1, le=1 << 30)] = 10_000_000
    max_upload_pixels: Annotated[int, Meta(ge=1, le=89_478_485)] = 40_000_000  # Pillow's own bomb limit
    decode_seconds: Seconds = 5.0
    verify_seconds: Seconds = 300.0
    max_header_bytes: Annotated[int, Meta(ge=1, le=1 << 20)] = 16_384


class _Tables(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The tables a :class:`Config` keeps as the file declares them (paths and globs resolved)."""

    events: EventSources = EventSources()
    algorithms: Algorithms = Algorithms()
    evaluation: Evaluation = Evaluation()
    visual: Visual = Visual()
    snapshots: Snapshots = Snapshots()
    serving: Serving = Serving()
    experiment: Experiment = Experiment()


class _Warehouse(Struct, frozen=True, forbid_unknown_fields=True):
    path: Path = Path("warehouse.duckdb")
    memory_limit: str = ""


class _Catalogue(Struct, frozen=True, forbid_unknown_fields=True):
    path: NonEmpty


class _File(_Tables, frozen=True, kw_only=True):
    """An ``etalage.toml`` as written: the :class:`Config` tables, and the tables that each hold one path."""

    warehouse: _Warehouse = _Warehouse()
    catalogue: _Catalogue


class Config(_Tables, frozen=True, kw_only=True):
    """A whole ``etalage.toml``; relative paths are already resolved against its folder."""

    warehouse: Path
    catalogue: Location
    source: Path | None = None
    memory_limit: str = ""  # DuckDB's memory_limit for a build ("1GB"); "": DuckDB's default


def load(path: Path) -> Config:
    """Read and check ``path``; raise :class:`ConfigError` naming the file and the offending key on any problem."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        msg = f"config file {path} does not exist (create one, or run `etalage generate` for an example)"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as error:
        msg = f"{path} is not valid TOML: {error}"
        raise ConfigError(msg) from None
    try:
        return parse(raw, base=path.parent, source=path)
    except ConfigError as error:
        msg = f"{path}: {error}"
        raise ConfigError(msg) from None


def parse(raw: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """The config a TOML document declares, its relative paths resolved against ``base``.

    Raises:
        ConfigError: a key is unknown, missing or out of its declared range, or keys disagree.
    """
    raw = _with_cutoff(raw)
    try:
        read = msgspec.convert(raw, _File, dec_hook=_path)
    except msgspec.ValidationError as error:
        raise ConfigError(_refusal(str(error), raw)) from None
    events, visual = read.events, read.visual
    tables = {name: getattr(read, name) for name in _Tables.__struct_fields__}
    config = Config(
        **{
            **tables,
            "events": replace(
                events,
                avro=_globs(events.avro, base, "events.avro"),
                parquet=_globs(events.parquet, base, "events.parquet"),
                mapping={**DIVOLTE_MAPPING, **events.mapping},
            ),
            "visual": replace(
                visual,
                checkpoint=visual.checkpoint and base / visual.checkpoint,
                cache=visual.cache and base / visual.cache,
            ),
            "snapshots": replace(read.snapshots, root=base / read.snapshots.root),
            "serving": replace(
                read.serving, exposures=str(_location(read.serving.exposures, base, "serving.exposures"))
            ),
        },
        warehouse=base / read.warehouse.path,
        catalogue=_location(read.catalogue.path, base, "catalogue.path"),
        source=source,
        memory_limit=_memory_limit(read.warehouse.memory_limit),
    )
    _check(config)
    return config


def _memory_limit(value: str) -> str:
    """``warehouse.memory_limit`` as DuckDB reads it (``"1GB"``, ``"512MiB"``), checked by DuckDB itself."""
    if value:
        import duckdb

        try:
            duckdb.connect(config={"memory_limit": value}).close()
        except duckdb.Error as error:
            msg = f"warehouse.memory_limit = {value!r} is not a size DuckDB reads ({str(error).splitlines()[0]})"
            raise ConfigError(msg) from None
    return value


def _check(config: Config) -> None:
    """The checks across keys, which no one key's declaration can make."""
    if not config.events.avro and not config.events.parquet:
        msg = "events: give at least one glob under `avro` or `parquet`"
        raise ConfigError(msg)
    visual = config.visual
    if visual.dims and visual.metric == "dot":
        msg = 'visual.dims (search in principal components) needs metric = "angular" or "euclidean"'
        raise ConfigError(msg)
    if visual.encoder != "open_clip" and (visual.model or visual.pretrained or visual.checkpoint):
        msg = 'visual.model, visual.pretrained and visual.checkpoint are for encoder = "open_clip"'
        raise ConfigError(msg)
    names = [variant.name for variant in config.experiment.variants]
    if len(set(names)) != len(names):
        raise ConfigError("experiment.variants: two variants have the same name")
    _served_algorithms_computed(config)
    if config.snapshots.gate_algorithm == AUTO and not config.evaluation.enabled:
        msg = (
            'snapshots.gate_algorithm = "auto" serves the algorithm the evaluation scores best, but evaluation.test_days '
            "is 0 and no evaluation.cutoff is set: hold some days out, or name the algorithm to serve"
        )
        raise ConfigError(msg)


def _served_algorithms_computed(config: Config) -> None:
    """Refuse a gate, variant or fallback on an algorithm that builds do not compute, or pictures out of reach."""
    computed: set[str] = set(config.algorithms.compute)
    if len(computed) != len(config.algorithms.compute):
        raise ConfigError("algorithms.compute names an algorithm twice")
    if config.visual.enabled:
        if isinstance(config.catalogue, str):
            msg = f"[visual] reads pictures beside the catalogue: catalogue.path must be local, not {config.catalogue}"
            raise ConfigError(msg)
        if "llr" not in computed:
            msg = (
                '[visual] blends the llr lists with the look-alikes (visual_blend): algorithms.compute must name "llr"'
            )
            raise ConfigError(msg)
        computed |= set(VISUAL_ALGORITHMS)
    named: list[tuple[str, str | None]] = [("snapshots.gate_algorithm", config.snapshots.gate_algorithm)]
    for index, variant in enumerate(config.experiment.variants):
        named += [
            (f"experiment.variants[{index}].algorithm", variant.algorithm),
            (f"experiment.variants[{index}].fallback", variant.fallback),
        ]
    for index, variant in enumerate(config.experiment.variants):
        if variant.algorithm == VISIT_BLEND and variant.fallback != "popular":
            msg = (
                f"experiment.variants[{index}] serves {VISIT_BLEND}, which falls back to popular as the session "
                f"route does: its fallback cannot be {variant.fallback or 'none'!r} (leave it out)"
            )
            raise ConfigError(msg)
    for key, algorithm in named:
        if algorithm in (None, AUTO, VISIT_BLEND) or algorithm in computed:
            continue
        if algorithm in VISUAL_ALGORITHMS:
            msg = f"{key} is {algorithm!r}, which builds compute only with `[visual] enabled = true`"
        else:
            msg = f"{key} is {algorithm!r}, which algorithms.compute does not name: builds do not compute it"
        raise ConfigError(msg)


def _with_cutoff(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``evaluation.cutoff`` as a naive datetime where it reads as one.

    msgspec takes only RFC 3339 timestamps, but the cutoff may be a TOML date
    or an ISO 8601 string such as ``2026-11-01T06:00``. A value that does not
    read as one is left for msgspec to refuse, naming the key.
    """
    evaluation = raw.get("evaluation")
    if not isinstance(evaluation, dict):
        return raw
    cutoff = evaluation.get("cutoff")
    if not isinstance(cutoff, (str, date)):
        return raw
    try:
        cutoff = datetime.fromisoformat(str(cutoff)).replace(tzinfo=None)
    except ValueError:
        return raw
    return {**raw, "evaluation": {**evaluation, "cutoff": cutoff}}


def _path(kind: type, value: Any) -> Any:
    """Decode a :class:`~pathlib.Path`, the one declared type msgspec does not read itself (resolved by :func:`parse`)."""
    if kind is Path and isinstance(value, str) and value:
        return Path(value)
    raise ValueError


_ERROR = re.compile(r"(?P<what>.*?)(?: - at `(?P<key>key` in `)?\$(?P<where>[^`]*)`)?", re.S)
"""msgspec's ``ValidationError`` text: what is wrong, and where (``$.visual.n_trees``; a key of a table: ``key` in `$...``)."""


def _refusal(error: str, raw: dict[str, Any]) -> str:
    """msgspec's error about ``raw`` as the config's message: the key, what it takes (from its declaration), what it has."""
    found = _ERROR.fullmatch(error)
    assert found is not None  # the pattern matches any text
    steps: list[str | int] = []
    kind: schema.Type = schema.type_info(_File)
    value: Any = raw
    declared: tuple[str, ...] = ()
    for name, index in re.findall(r"\.(\w+)|\[(\d+|\.\.\.)\]", found["where"] or ""):
        step = name or (int(index) if index.isdigit() else _bad_entry(value, kind))
        steps.append(step)
        if isinstance(kind, schema.StructType) and isinstance(step, str):
            # msgspec's inspect sorts a Literal's values: keep the declared order
            declared = _literal_values(get_type_hints(kind.cls)[step])
        kind, value = _inside(kind, step), value[step]
    if found["key"] or found["what"].startswith("Object contains unknown field"):
        if isinstance(kind, schema.StructType):
            known = [f.encode_name for f in kind.fields]
        else:  # a table whose keys are declared as a Literal (events.mapping)
            assert isinstance(kind, schema.DictType) and isinstance(kind.key_type, schema.LiteralType)
            known = [str(key) for key in kind.key_type.values]
        unknown = sorted(set(value) - set(known))[0]
        return f"unknown config key {_key([*steps, unknown])} (known: {', '.join(sorted(known))})"
    if missing := re.match(r"Object missing required field `(.*)`", found["what"]):
        steps.append(missing[1])
        kind = _inside(kind, missing[1])
        while isinstance(kind, schema.StructType):  # a missing table: name the key it needs
            name = next(f.encode_name for f in kind.fields if f.required)
            steps.append(name)
            kind = _inside(kind, name)
        return f"{_key(steps)} is required"
    return f"{_key(steps)} must be {_expected(kind, declared)}, not {value!r}"


def _literal_values(hint: Any) -> tuple[str, ...]:
    """The values of the Literals in a type hint, in the order they are declared."""
    return tuple(
        value for arg in get_args(hint) for value in ((arg,) if isinstance(arg, str) else _literal_values(arg))
    )


def _bad_entry(table: dict[str, Any], kind: schema.Type) -> str:
    """The key of ``table`` whose value msgspec refused: its error says ``[...]`` (the table's values are strings)."""
    assert isinstance(kind, schema.DictType) and isinstance(kind.value_type, schema.StrType)
    least = kind.value_type.min_length or 0
    return next(key for key, value in table.items() if not (isinstance(value, str) and len(value) >= least))


def _inside(kind: schema.Type, step: str | int) -> schema.Type:
    """The declared type of key or item ``step`` of a table or list declared as ``kind``."""
    if isinstance(kind, schema.StructType):
        return next(f.type for f in kind.fields if f.encode_name == step)
    if isinstance(kind, schema.DictType):
        return kind.value_type
    assert isinstance(kind, (schema.VarTupleType, schema.ListType))
    return kind.item_type


def _key(steps: list[str | int]) -> str:
    """``["experiment", "variants", 0, "name"]`` as the config's docs write it: ``experiment.variants[0].name``."""
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in steps).lstrip(".")


def _expected(kind: schema.Type, declared: tuple[str, ...] = ()) -> str:
    """What a key declared as ``kind`` takes, in words (``declared``: its Literal's values in order)."""
    if isinstance(kind, schema.UnionType):  # TOML has no null: None is only the default
        return " or ".join(_expected(k, declared) for k in kind.types if not isinstance(k, schema.NoneType))
    if isinstance(kind, schema.BoolType):
        return "true or false"
    if isinstance(kind, (schema.IntType, schema.FloatType)):
        noun = "an integer" if isinstance(kind, schema.IntType) else "a number"
        if kind.ge is not None and kind.le is not None:
            return f"{noun} from {kind.ge} to {kind.le}"
        bounds = [
            f"{sign} {bound}" for sign, bound in ((">=", kind.ge), (">", kind.gt), ("<=", kind.le)) if bound is not None
        ]
        return " ".join([noun, *bounds])
    if isinstance(kind, schema.StrType):
        return "a non-empty string" if kind.min_length else "a string"
    if isinstance(kind, schema.LiteralType):
        return "one of " + ", ".join(str(value) or '""' for value in declared or kind.values)
    if isinstance(kind, schema.DateTimeType):
        return "a date or timestamp like 2026-11-01 or 2026-11-01T06:00"
    if isinstance(kind, schema.CustomType):
        return "a non-empty string (a path)"
    if isinstance(kind, (schema.VarTupleType, schema.ListType)):
        return f"{'a non-empty list' if kind.min_length else 'a list'}, each {_expected(kind.item_type)}"
    return "a table"


def _globs(patterns: tuple[str, ...], base: Path, key: str) -> tuple[str, ...]:
    return tuple(str(_location(pattern, base, key)) for pattern in patterns)


def _location(value: str, base: Path, key: str) -> Location:
    """A path (relative to ``base``) or URI from the config: ``file://`` becomes a path, a remote URI stays as written.

    Raises:
        ConfigError: its scheme is none etalage reads.
    """
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
# The click algorithms each build computes: all by default, so that the evaluation
# compares them. Naming fewer (say compute = ["llr", "popular"]) builds faster.
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
