"""Prometheus metrics: requests and latency per route and variant, background failures, and which snapshot is served.

``etalage serve`` runs several worker processes, and a scrape reaches only
one of them, so the counters use prometheus_client's multiprocess mode: each
process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (the CLI
creates a fresh folder for each server) and ``/metrics`` adds them up.
Without that variable (tests, one process) the ordinary registry is used.

Which snapshot each process serves is not a prometheus_client gauge: in
multiprocess mode a gauge's labels cannot be removed (the old build id would
stay at 1 after a switch, with a warning in the log) and a killed worker's
values stay until its parent reports it dead, which uvicorn does not. Each
process instead keeps one small file, ``served-<pid>.json``, replaced on
every switch, and the scrape reads those of the processes still running.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

REQUESTS = Counter("etalage_requests", "HTTP requests answered", ["route", "variant", "status"])
LATENCY = Histogram(
    "etalage_request_seconds",
    "Time from request to the end of the response, in the server",
    ["route", "variant"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
RELOAD_FAILURES = Counter("etalage_snapshot_reload_failures", "Published snapshots a process refused to serve")
DAMAGED = Counter(
    "etalage_snapshot_damaged", "Served snapshots that failed the background check, after which the process switched"
)
BACKGROUND_FAILURES = Counter(
    "etalage_background_failures", "Failed runs of a background loop (each logged with its traceback)", ["loop"]
)
EXPOSURES_DROPPED = Counter(
    "etalage_exposures_dropped", "Exposure records lost: the buffer was full and could not be written or spilled"
)


def observe(route: str, variant: str, status: int, seconds: float) -> None:
    """Count one answered request."""
    REQUESTS.labels(route, variant, str(status)).inc()
    LATENCY.labels(route, variant).observe(seconds)


_SERVED: dict[int, tuple[str, float]] = {}
"""Without multiprocess mode: this process's served snapshot, by pid (one entry)."""


def served(build_id: str, created: float) -> None:
    """Record that this process now serves snapshot ``build_id``, built at ``created`` (a Unix time)."""
    if not MULTIPROCESS:
        _SERVED.clear()
        _SERVED[os.getpid()] = (build_id, created)
        return
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    partial = folder / f".served-{os.getpid()}.json"
    partial.write_text(json.dumps({"build_id": build_id, "created": created}))
    os.replace(partial, folder / f"served-{os.getpid()}.json")


def _served_by_live_processes() -> dict[int, tuple[str, float]]:
    """Each running process's snapshot; a dead process's file is removed as it is found."""
    if not MULTIPROCESS:
        return dict(_SERVED)
    found = {}
    for path in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("served-*.json"):
        pid = int(path.stem.removeprefix("served-"))
        if not _running(pid):
            path.unlink(missing_ok=True)
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed since the glob
        found[pid] = (record["build_id"], record["created"])
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie, killed but not yet reaped, has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class _ServedSnapshots(Collector):
    """``etalage_snapshot_info{build_id,pid}`` per running process, and the age of the oldest snapshot served."""

    def collect(self) -> Iterator[Metric]:
        processes = _served_by_live_processes()
        info = GaugeMetricFamily(
            "etalage_snapshot_info",
            "The snapshot each running server process serves (value 1)",
            labels=["build_id", "pid"],
        )
        for pid, (build_id, _) in sorted(processes.items()):
            info.add_metric([build_id, str(pid)], 1)
        yield info
        if processes:
            oldest = min(created for _, created in processes.values())
            yield GaugeMetricFamily(
                "etalage_snapshot_created_timestamp_seconds",
                "When the oldest snapshot a running server process serves was built",
                value=oldest,
            )
            yield GaugeMetricFamily(
                "etalage_snapshot_age_seconds",
                "Age of the oldest snapshot a running server process serves",
                value=time.time() - oldest,
            )


SERVED = _ServedSnapshots()
if not MULTIPROCESS:
    DEFAULT_REGISTRY.register(SERVED)


def exposition() -> bytes:
    """The text a Prometheus scrape gets."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(SERVED)
        return generate_latest(registry)
    return generate_latest(DEFAULT_REGISTRY)
