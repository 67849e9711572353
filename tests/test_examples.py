"""The scheduling examples run: the Airflow DAG's steps in order on a shop with local Spark, and the cron line.

The DAG file itself parses in a ``DagBag`` where Airflow is installed (the
``airflow`` extra); elsewhere that test skips, saying so.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.publish import snapshot
from tests.conftest import copy_shop

EXAMPLES = Path(__file__).parent.parent / "examples"


def load_steps():
    spec = importlib.util.spec_from_file_location("etalage_steps", EXAMPLES / "airflow" / "etalage_steps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_dags_steps_build_on_spark_wait_for_their_marker_publish_and_verify(small_shop, tmp_path):
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        pytest.skip("no Java on this machine: the Spark build needs Java 17 or newer")
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]'")
    steps = load_steps()
    shop = steps.Shop(
        config=copy_shop(small_shop, tmp_path / "shop"), output=str(tmp_path / "tables"), master="local[2]"
    )
    build_id = steps.new_build_id()
    assert not steps.marker_names(shop.output, build_id)
    steps.run(steps.build_command(shop, build_id))
    assert steps.marker_names(shop.output, build_id)
    assert not steps.marker_names(shop.output, steps.new_build_id())  # another run's marker is not this one's
    root = tmp_path / "shop" / "snapshots"
    with snapshot.locked(root), pytest.raises(steps.StepFailed) as busy:
        steps.run(steps.publish_command(shop))
    assert (busy.value.code, busy.value.retry) == (4, True)
    steps.run(steps.publish_command(shop))
    steps.run(steps.verify_command(shop))
    assert snapshot.live(root).build_id == build_id
    with pytest.raises(steps.StepFailed) as again:  # published already: a retry would fail the same way
        steps.run(steps.publish_command(shop))
    assert (again.value.code, again.value.retry) == (3, False)


@pytest.mark.slow
def test_the_cron_line_builds_and_logs(small_shop, tmp_path):
    folder = tmp_path / "srv"
    copy_shop(small_shop, folder)
    (folder / "logs").mkdir()
    line = next(
        line for line in (EXAMPLES / "cron" / "crontab").read_text().splitlines() if line and not line.startswith("#")
    )
    command = line.split(None, 5)[5]  # after the five schedule fields
    command = command.replace("/srv/etalage", shlex.quote(str(folder)))
    command = command.replace(".venv/bin/etalage", f"{shlex.quote(sys.executable)} -m engine")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (folder / "logs" / "build.log").read_text()[-2000:]
    assert "published snapshot" in (folder / "logs" / "build.log").read_text()


def test_the_dag_file_parses_in_airflow():
    pytest.importorskip("airflow", reason="Airflow is not installed: pip install -e '.[airflow]' to check the DAG file")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES / "airflow"))
    assert bag.import_errors == {}
    dag = bag.dags["etalage"]
    assert [task.task_id for task in dag.topological_sort()] == ["spark_build", "marker", "publish", "verify"]
