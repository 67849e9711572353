"""Where events, the catalogue and exposures are: local paths, or URIs on object stores and HDFS.

A location in ``etalage.toml`` is a path (relative to the config's folder),
a ``file://`` URI (read as the path it names) or a URI whose scheme is one of
:data:`REMOTE_SCHEMES`. Remote locations are listed, sized and checked
through pyarrow's filesystems, by ranged reads of each file's ends. DuckDB
reads ``s3://`` objects itself, through the httpfs extension that the
``duckdb-extension-httpfs`` package ships (loaded by path, never
downloaded), with a secret made from the standard AWS environment variables;
it has no reader of its own for ``gs://`` and ``hdfs://``, so it reads them
through the same pyarrow filesystems, registered with the connection as
fsspec filesystems (see ``docs/object-stores.md``).
"""

from __future__ import annotations

import datetime as dt
import functools
import glob as local_glob
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeGuard
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
from fsspec.implementations.arrow import ArrowFSWrapper
from fsspec.utils import glob_translate

from engine.publish import warehouse

REMOTE_SCHEMES = ("s3", "gs", "hdfs")
"""The URI schemes a location may have besides ``file``."""
HTTPFS_READS = ("s3",)
"""The remote schemes DuckDB reads itself (through httpfs); it reads the others through pyarrow's filesystems."""
GCS_EMULATOR = "STORAGE_EMULATOR_HOST"
"""The variable that points ``gs://`` at a local emulator (``host:port``) instead of Google, as Google's libraries read it."""
GCS_PATIENCE = dt.timedelta(seconds=15)
"""How long a ``gs://`` request is retried before the store counts as not answering."""
S3_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
"""What an ``s3://`` location needs; AWS_SESSION_TOKEN, AWS_REGION and AWS_ENDPOINT_URL may add to them."""

Location = Path | str
"""A local path, or the URI of a remote location (a ``str`` with ``://``)."""


class Unreachable(RuntimeError):
    """A remote location cannot be listed or read: no credentials, no such bucket, no answer from the store."""


@dataclass(frozen=True)
class FileInfo:
    """One file a listing found: its location, size and last modification (UTC, to the microsecond)."""

    path: str
    size: int
    modified: dt.datetime


def is_remote(location: Location) -> TypeGuard[str]:
    """Whether ``location`` is a remote URI (the config has already turned ``file://`` URIs into paths)."""
    return isinstance(location, str) and "://" in location


def scheme(location: str) -> str:
    """The URI scheme of ``location`` in lower case (``""`` for a path)."""
    return location.split("://", 1)[0].lower() if "://" in location else ""


def glob(pattern: str) -> list[FileInfo]:
    """The files matching ``pattern`` (``**`` crosses folders), sorted; a remote one from its store's listing."""
    if not is_remote(pattern):
        paths = sorted(p for p in local_glob.glob(pattern, recursive=True) if os.path.isfile(p))
        return [_local(path, os.stat(path)) for path in paths]
    prefix = pattern.split("://", 1)[0] + "://"
    store, inside = _filesystem(pattern), _inside(pattern)
    wildcard = min((inside.find(char) for char in "*?[" if char in inside), default=-1)
    base = inside[: inside.rfind("/", 0, wildcard) + 1] if wildcard >= 0 else inside
    if wildcard < 0:
        selected: pafs.FileSelector | str = inside
    else:  # one recursive listing under the fixed folder (pages of keys), not one per folder as a walk would
        selected = pafs.FileSelector(base.rstrip("/"), recursive=True, allow_not_found=True)
    matches = re.compile(glob_translate(inside)).match
    with reaching(pattern, "list"):
        listing = store.get_file_info(selected)
        if isinstance(listing, pafs.FileInfo):
            listing = [listing]
        bucket = _authority(pattern)
        if not listing and scheme(pattern) != "hdfs" and store.get_file_info(bucket).type == pafs.FileType.NotFound:
            msg = f"{pattern}: bucket {bucket!r} does not exist (or these credentials cannot see it)"
            raise Unreachable(msg)
    return [
        FileInfo(prefix + entry.path, entry.size, _utc(entry.mtime))
        for entry in sorted(listing, key=lambda entry: entry.path)
        if entry.type == pafs.FileType.File and matches(entry.path) and not _hidden(entry.path[len(base) :])
    ]


@contextmanager
def opened(location: Location) -> Iterator[BinaryIO]:
    """A seekable binary stream over the file; a remote one reads only the byte ranges asked for."""
    if not is_remote(location):
        with open(location, "rb") as stream:
            yield stream
        return
    with reaching(str(location), "open"):
        stream = _filesystem(location).open_input_file(_inside(location))
    with stream:
        yield stream


def filesystem(location: Location) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem that holds ``location`` and its path there (for pyarrow's own readers)."""
    if not is_remote(location):
        return pafs.LocalFileSystem(), str(location)
    return _filesystem(location), _inside(location)


@contextmanager
def duckdb_reads(connection: duckdb.DuckDBPyConnection, locations: Sequence[Location]) -> Iterator[None]:
    """While open, ``connection`` can read ``locations``: httpfs and an S3 secret for ``s3://``, pyarrow for the others.

    The secret's values are bound parameters, never part of the SQL text.
    ``gs://`` and ``hdfs://`` are read on one DuckDB thread: DuckDB binds
    some reads (a relation's, ``union_by_name``'s) holding the GIL, and a
    thread of its own that called pyarrow's wrapper would wait for it forever.

    Raises:
        Unreachable: no AWS credentials in the environment, a filesystem that cannot be made (no libhdfs),
            or ``hdfs://`` locations on two name nodes.
    """
    remote = [str(location) for location in locations if is_remote(location)]
    through_arrow = {}
    for kind in sorted({scheme(location) for location in remote} - set(HTTPFS_READS)):
        named = sorted({location for location in remote if scheme(location) == kind})
        nodes = {_authority(location) for location in named}
        if kind == "hdfs" and len(nodes) > 1:
            msg = f"{named[0]}: hdfs:// locations on {len(nodes)} name nodes ({', '.join(sorted(nodes))}); use one"
            raise Unreachable(msg)
        through_arrow[kind] = _ThroughArrow(_filesystem(named[0]), kind)
    on_s3 = [location for location in remote if scheme(location) in HTTPFS_READS]
    if on_s3:
        _let_httpfs_read(connection, on_s3[0])
    if not through_arrow:
        yield
        return
    (threads,) = connection.execute("SELECT current_setting('threads')").fetchone() or (1,)
    for filesystem in through_arrow.values():
        connection.register_filesystem(filesystem)
    connection.execute("SET threads = 1")
    try:
        yield
    finally:
        connection.execute(f"SET threads = {int(threads)}")  # SET takes no bound parameters; an int from DuckDB
        for kind in through_arrow:
            connection.unregister_filesystem(kind)


def _let_httpfs_read(connection: duckdb.DuckDBPyConnection, location: str) -> None:
    """Load httpfs and create the S3 secret from the environment (``location``: the first on ``s3://``, for errors)."""
    settings = _s3_settings(location)
    warehouse.load_extension(connection, "httpfs")
    endpoint = urlsplit(settings.endpoint) if settings.endpoint else None
    connection.execute(
        "CREATE OR REPLACE TEMPORARY SECRET etalage_s3 (TYPE s3, KEY_ID $key, SECRET $secret, SESSION_TOKEN $token, "
        "REGION $region, ENDPOINT $endpoint, URL_STYLE $style, USE_SSL $ssl)",
        {
            "key": settings.key,
            "secret": settings.secret,
            "token": settings.token or "",
            "region": settings.region,
            "endpoint": endpoint.netloc if endpoint else "s3.amazonaws.com",
            "style": "path" if endpoint else "vhost",
            "ssl": endpoint.scheme != "http" if endpoint else True,
        },
    )


@contextmanager
def reaching(location: str, action: str) -> Iterator[None]:
    """Turn a filesystem's failure to reach ``location`` into :class:`Unreachable`, naming it and the reason."""
    try:
        yield
    except Unreachable:
        raise
    except FileNotFoundError:
        raise  # the caller names what is missing
    except (OSError, pa.ArrowException) as error:
        reason = " ".join(str(error).split())
        msg = f"{location}: cannot {action} it ({reason})"
        raise Unreachable(msg) from None


@dataclass(frozen=True)
class _S3:
    key: str
    secret: str
    token: str | None
    region: str
    endpoint: str | None


def _s3_settings(location: str) -> _S3:
    """The S3 credentials, region and endpoint from the standard AWS environment variables."""
    missing = [name for name in S3_ENVIRONMENT if not os.environ.get(name)]
    if missing:
        msg = f"{location}: no credentials for s3:// (set {' and '.join(missing)}; see docs/object-stores.md)"
        raise Unreachable(msg)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return _S3(
        key=os.environ["AWS_ACCESS_KEY_ID"],
        secret=os.environ["AWS_SECRET_ACCESS_KEY"],
        token=os.environ.get("AWS_SESSION_TOKEN") or None,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint=endpoint if not endpoint or "://" in endpoint else f"https://{endpoint}",
    )


def _filesystem(location: str) -> pafs.FileSystem:
    """The filesystem of a remote location; S3's from the environment (as DuckDB's secret), others from the URI."""
    kind = scheme(location)  # one of REMOTE_SCHEMES: the config refuses others
    if kind == "s3":
        return _s3_filesystem(_s3_settings(location))
    if kind == "gs":
        return _gcs_filesystem(os.environ.get(GCS_EMULATOR) or None)
    with reaching(location, "connect to"):
        return _uri_filesystem(f"{kind}://{_authority(location)}/")


@functools.lru_cache(maxsize=8)
def _s3_filesystem(settings: _S3) -> pafs.S3FileSystem:
    """One client per set of settings (threads share it); a store that does not answer fails after three tries."""
    endpoint = urlsplit(settings.endpoint) if settings.endpoint else None
    return pafs.S3FileSystem(
        access_key=settings.key,
        secret_key=settings.secret,
        session_token=settings.token,
        region=settings.region,
        endpoint_override=endpoint.netloc if endpoint else None,
        scheme=endpoint.scheme if endpoint else "https",
        connect_timeout=5,
        request_timeout=30,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    )


@functools.lru_cache(maxsize=8)
def _gcs_filesystem(emulator: str | None) -> pafs.GcsFileSystem:
    """Google Cloud Storage with Google's default credentials, or the emulator at ``emulator`` without any."""
    if emulator is None:
        return pafs.GcsFileSystem(retry_time_limit=GCS_PATIENCE)
    endpoint = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
    return pafs.GcsFileSystem(
        anonymous=True, endpoint_override=endpoint.netloc, scheme=endpoint.scheme, retry_time_limit=GCS_PATIENCE
    )


@functools.lru_cache(maxsize=8)
def _uri_filesystem(root: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(root)[0]


class _ThroughArrow(ArrowFSWrapper):
    """A pyarrow filesystem as an fsspec one that answers for ``scheme``: how DuckDB reads ``gs://`` and ``hdfs://``."""

    def __init__(self, filesystem: pafs.FileSystem, scheme: str) -> None:
        super().__init__(filesystem)
        self.scheme = scheme

    @property
    def protocol(self) -> str:  # fsspec's is the pyarrow type name ("gcs"), not the scheme
        return self.scheme


def _authority(location: str) -> str:
    """The bucket or name node of a URI (split by hand: a glob's ``?`` is no query)."""
    return location.split("://", 1)[1].split("/", 1)[0]


def _inside(location: str) -> str:
    """The path of a URI inside its filesystem: ``bucket/key`` for a store, ``/path`` for HDFS."""
    rest = location.split("://", 1)[1]
    return "/" + rest.split("/", 1)[1] if scheme(location) == "hdfs" and "/" in rest else rest


def _local(path: str, status: os.stat_result) -> FileInfo:
    modified = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=status.st_mtime_ns // 1000)
    return FileInfo(path, status.st_size, modified)


def _hidden(path: str) -> bool:
    """Whether a name in the path starts with a dot (a file being written), which a glob skips as Python's does."""
    return any(name.startswith(".") for name in path.split("/"))


def _utc(moment: dt.datetime) -> dt.datetime:
    """A listing's time as the ledger keeps it: naive UTC."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment
