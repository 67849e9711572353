"""The hourly Spark rebuild as commands: what the DAG beside this file runs, and what its test runs without Airflow.

Each step is one etalage command. A failed step is retried only when a retry
can fix it: exit code 4 (a lock is held by another build, rollback or
publish). Bad input (3), a refused gate (6), a snapshot that fails
verification (7), a full disk (8) or a bug (1) fail the same way again, so
they fail the run at once and the log says why.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from pyarrow import fs

RETRIED_EXIT_CODES = frozenset({4})
"""Exit codes worth another try (docs: "Exit codes (for cron and Airflow)")."""


@dataclass(frozen=True)
class Shop:
    """Where one shop's etalage lives: its config, the Spark output (a path or Hadoop URI) and the Spark master."""

    config: Path
    output: str
    master: str = "local[*]"
    python: str = sys.executable


def new_build_id(when: dt.datetime | None = None) -> str:
    """An id in etalage's own form (it sorts in time), made before the build so the sensor can wait for it."""
    when = when or dt.datetime.now(dt.UTC)
    return f"{when:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:6]}"


def build_command(shop: Shop, build_id: str) -> list[str]:
    """The Spark build, started by etalage (client mode); spark-submit works the same way (docs/spark.md)."""
    return [
        shop.python,
        "-m",
        "engine",
        "build",
        "--engine",
        "spark",
        "--master",
        shop.master,
        "--config",
        str(shop.config),
        "--output",
        shop.output,
        "--build-id",
        build_id,
    ]


def publish_command(shop: Shop) -> list[str]:
    return [shop.python, "-m", "engine", "publish", "--from", shop.output, "--config", str(shop.config)]


def verify_command(shop: Shop) -> list[str]:
    return [shop.python, "-m", "engine", "snapshots", "--verify", "--config", str(shop.config)]


def marker_names(output: str, build_id: str) -> bool:
    """Whether the output's ``_SUCCESS`` marker is this build's (a marker left by the previous build proves nothing)."""
    try:
        if "://" in output:  # hdfs://, s3://, gs://, file:// through Arrow's filesystems
            filesystem, folder = fs.FileSystem.from_uri(output)
        else:
            filesystem, folder = fs.LocalFileSystem(), os.path.abspath(output)
        with filesystem.open_input_stream(f"{folder}/_SUCCESS") as marker:
            return json.loads(marker.read())["build_id"] == build_id
    except (OSError, ValueError, KeyError, TypeError):  # not there yet, or not a marker: keep waiting
        return False


class StepFailed(RuntimeError):
    """A step exited non-zero; ``retry`` says whether another try can succeed."""

    def __init__(self, command: list[str], code: int) -> None:
        self.code = code
        self.retry = code in RETRIED_EXIT_CODES
        super().__init__(f"{' '.join(command[2:4])} exited with {code} ({'retried' if self.retry else 'not retried'})")


def run(command: list[str]) -> None:
    """Run one step with its output in the task's log; raise :class:`StepFailed` on a non-zero exit."""
    code = subprocess.run(command, env={**os.environ, "PYSPARK_PYTHON": command[0]}, check=False).returncode
    if code:
        raise StepFailed(command, code)
