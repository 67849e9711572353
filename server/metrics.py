"""Prometheus metrics: requests and latency per route and variant, and which snapshot is served.

``etalage serve`` runs several worker processes, and a scrape reaches only
one of them, so the counters use prometheus_client's multiprocess mode: each
process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (the CLI
creates a fresh folder for each server) and ``/metrics`` adds them up.
Without that variable (tests, one process) the ordinary registry is used.
"""

from __future__ import annotations

import os
import time

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

REQUESTS = Counter("etalage_requests", "HTTP requests answered", ["route", "variant", "status"])
LATENCY = Histogram(
    "etalage_request_seconds",
    "Time from request to the end of the response, in the server",
    ["route", "variant"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
SNAPSHOT = Gauge(
    "etalage_snapshot_info",
    "The snapshot each server process serves (value 1)",
    ["build_id"],
    multiprocess_mode="liveall",
)
SNAPSHOT_CREATED = Gauge(
    "etalage_snapshot_created_timestamp_seconds", "When the served snapshot was built", multiprocess_mode="min"
)
SNAPSHOT_AGE = Gauge(
    "etalage_snapshot_age_seconds",
    "Age of the served snapshot, as the scraped process saw it",
    multiprocess_mode="mostrecent",
)
RELOAD_FAILURES = Counter("etalage_snapshot_reload_failures", "Published snapshots a process refused to serve")


def observe(route: str, variant: str, status: int, seconds: float) -> None:
    """Count one answered request."""
    REQUESTS.labels(route, variant, str(status)).inc()
    LATENCY.labels(route, variant).observe(seconds)


def served(build_id: str, previous: str | None, created: float) -> None:
    """Record that this process switched to snapshot ``build_id``."""
    if previous is not None:
        SNAPSHOT.remove(previous)
    SNAPSHOT.labels(build_id).set(1)
    SNAPSHOT_CREATED.set(created)


def exposition(created: float | None) -> bytes:
    """The text a Prometheus scrape gets, with the snapshot's age as of now."""
    if created is not None:
        SNAPSHOT_AGE.set(time.time() - created)
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(DEFAULT_REGISTRY)
