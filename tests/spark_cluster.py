"""A Spark standalone master and one worker on 127.0.0.1, started from pyspark's own jars as an operator starts them.

Shared by ``tests/test_spark_cluster.py`` and ``tests/bench/bench_spark.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SPARK_CLASS = Path(sys.executable).parent / "spark-class"
LOOPBACK = {"SPARK_LOCAL_IP": "127.0.0.1"}


def free_port() -> int:
    """A loopback port free now (here rather than from conftest, so that benchmarks run without pytest)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def standalone(folder: Path, cores: int, memory: str) -> Iterator[str]:
    """A master and one worker of ``cores`` and ``memory`` until the block ends, their logs in ``folder``; the URL.

    Raises:
        RuntimeError: a daemon exited, or no worker registered in 120 s (the message names the logs' folder).
    """
    import pyspark

    home = str(Path(pyspark.__file__).parent)  # its jars; spark-class would look for them with another Python
    env = {**os.environ, **LOOPBACK, "SPARK_HOME": home, "SPARK_LOG_DIR": str(folder)}
    port, web = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    daemons = {
        "master": ("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                   "--webui-port", str(web)),
        "worker": ("org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", str(cores),
                   "--memory", memory, "--webui-port", str(free_port()), "--work-dir", str(folder / "work")),
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        processes = []
        for name, arguments in daemons.items():
            log = stack.enter_context((folder / f"{name}.log").open("w"))
            process = subprocess.Popen([str(SPARK_CLASS), *arguments], stdout=log, stderr=subprocess.STDOUT, env=env)
            stack.callback(process.wait, timeout=60)
            stack.callback(process.terminate)
            processes.append(process)
        deadline = time.monotonic() + 120
        while True:
            if any(process.poll() is not None for process in processes):
                msg = f"a Spark daemon exited: see {folder}"
                raise RuntimeError(msg)
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{web}/json/", timeout=2) as answer,
            ):
                if json.load(answer).get("aliveworkers", 0) >= 1:
                    break
            if time.monotonic() > deadline:
                msg = f"no worker registered with {url} in 120 s: see {folder}"
                raise RuntimeError(msg)
            time.sleep(1)
        yield url
