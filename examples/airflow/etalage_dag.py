"""Airflow DAG: every hour, a Spark build, a sensor on that build's own marker, publish, verify.

Copy this file and ``etalage_steps.py`` into the DAGs folder of an Airflow
that runs on a host with etalage installed, and set the ``SHOP`` below. Only
exit code 4 (a lock held) is retried; any other failure fails the run at once
(see ``etalage_steps.py``).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # etalage_steps.py beside it, wherever the DAGs folder is
import etalage_steps as steps
from airflow.exceptions import AirflowException, AirflowFailException
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG

SHOP = steps.Shop(
    config=Path("/srv/etalage/etalage.toml"),
    output="hdfs:///etalage/tables",
    master="yarn",
    python="/srv/etalage/.venv/bin/python",
)


def _run(command: list[str]) -> None:
    try:
        steps.run(command)
    except steps.StepFailed as failed:
        raise (AirflowException if failed.retry else AirflowFailException)(str(failed)) from None


def _build(ti) -> None:
    build_id = steps.new_build_id()
    ti.xcom_push(key="build_id", value=build_id)
    _run(steps.build_command(SHOP, build_id))


with DAG(
    "etalage",
    schedule="@hourly",
    start_date=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": dt.timedelta(minutes=2)},
) as dag:
    build = PythonOperator(task_id="spark_build", python_callable=_build)
    finished = PythonSensor(
        task_id="marker",
        python_callable=lambda ti: steps.marker_names(
            SHOP.output, ti.xcom_pull(task_ids="spark_build", key="build_id")
        ),
        poke_interval=30,
        timeout=600,
        mode="reschedule",
    )
    publish = PythonOperator(task_id="publish", python_callable=_run, op_args=[steps.publish_command(SHOP)])
    verify = PythonOperator(task_id="verify", python_callable=_run, op_args=[steps.verify_command(SHOP)])
    build >> finished >> publish >> verify
