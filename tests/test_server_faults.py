"""The app under faults, through Litestar's test client with its background loops running on real files.

A flush into a folder that cannot be written, a `current` that is briefly a
file, a snapshot damaged in place, an unforeseen exception, an exposure
queue that fills up: each is logged, counted, and survived.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from litestar import get
from litestar.testing import TestClient
from msgspec.structs import replace
from prometheus_client import REGISTRY

from engine import config
from engine.publish import snapshot
from server.app import create_app
from server.exposures import SPILL, ExposureLog
from tests.conftest import copy_built, tiny_tables


@pytest.fixture(scope="module")
def shop(built_small_shop, tmp_path_factory) -> config.Config:
    """A built copy of the small shop (its snapshot is never changed here)."""
    return config.load(copy_built(built_small_shop, tmp_path_factory.mktemp("faults")) / "etalage.toml")


@pytest.fixture
def logged(caplog) -> pytest.LogCaptureFixture:
    """``caplog``, fed by etalage's loggers directly: Litestar's logging config replaces the root logger's handlers."""
    logger = logging.getLogger("etalage")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def settings(shop: config.Config, root: Path | None = None, **serving) -> config.Config:
    """The shop's config with ``serving`` changed, and its snapshots under ``root`` if given."""
    snapshots = replace(shop.snapshots, root=root) if root else shop.snapshots
    return replace(shop, snapshots=snapshots, serving=replace(shop.serving, **serving))


def published(root: Path, *build_ids: str) -> None:
    """Hand-made snapshots (``tests.conftest.tiny_tables``), published in this order: the last is live."""
    for build_id in build_ids:
        snapshot.publish(root, snapshot.stage(root, build_id, tiny_tables(), {}))


def until(condition: Callable[[], object], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def serving(client: TestClient) -> str:
    return client.get("/ready").json()["snapshot"]


def damage(path: Path) -> None:
    """Flip one byte in place, as a disk or a stray process would (the file is read-only: even its owner must chmod)."""
    path.chmod(0o644)
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))


def test_a_failed_flush_is_logged_counted_spilled_and_written_once_the_folder_is_fixed(shop, tmp_path, logged):
    folder = tmp_path / "exposures"
    blocker = folder / f"date={dt.datetime.now(dt.UTC):%Y-%m-%d}"
    folder.mkdir()
    blocker.write_text("a file where the day's folder should be")
    failures = counted("etalage_background_failures_total", loop="flush")
    tenant, product = "nl", pq.read_table(shop.catalogue).column("product_id")[0].as_py()
    with TestClient(create_app(settings(shop, exposures=folder, flush_seconds=0.05))) as client:
        log = client.app.state.exposures
        for i in range(5):
            assert client.get(f"/v1/{tenant}/products/{product}/gateway", params={"visitor": f"0:v{i}"}).is_success
        until(lambda: list((folder / SPILL).rglob(".exposures-*.parquet")))
        assert log.queued == 0  # on disk, not in memory
        # The loop counts and logs the failure after the flush has spilled and raised: wait for both, not the file.
        until(lambda: counted("etalage_background_failures_total", loop="flush") > failures)
        until(lambda: any(r.getMessage().startswith("background flush failed") for r in logged.records))
        failure = next(r for r in logged.records if r.getMessage().startswith("background flush failed"))
        assert failure.exc_info and "records wait in" in str(failure.exc_info[1])

        blocker.unlink()
        until(lambda: list(blocker.glob("exposures-*.parquet")), seconds=15)  # after the backoff
        client.get(f"/v1/{tenant}/products/{product}/gateway", params={"visitor": "0:after"})
        until(lambda: sum(pq.read_metadata(p).num_rows for p in blocker.glob("*.parquet")) == 6)
    assert not list((folder / SPILL).rglob("*.parquet"))
    visitors = sorted(pq.read_table(blocker).column("visitor").to_pylist())
    assert visitors == ["0:after", "0:v0", "0:v1", "0:v2", "0:v3", "0:v4"]


def test_the_reload_loop_survives_a_current_that_was_briefly_a_file(shop, tmp_path):
    root = tmp_path / "snapshots"
    published(root, "b1")
    with TestClient(create_app(settings(shop, root, reload_seconds=0.05))) as client:
        assert serving(client) == "b1"
        (root / "current").unlink()
        (root / "current").write_text("b1")
        time.sleep(0.3)
        assert serving(client) == "b1"
        (root / "current").unlink()
        os.symlink("b1", root / "current")
        published(root, "b2")
        until(lambda: serving(client) == "b2")


def test_a_snapshot_damaged_in_place_is_left_for_the_newest_that_verifies(shop, tmp_path, logged):
    root = tmp_path / "snapshots"
    published(root, "b1", "b2", "b3")
    damaged = counted("etalage_snapshot_damaged_total")
    with TestClient(create_app(settings(shop, root, verify_seconds=0.05))) as client:
        assert serving(client) == "b3"
        damage(root / "b3" / "itemitem.arrow")
        until(lambda: serving(client) == "b2")
        assert counted("etalage_snapshot_damaged_total") == damaged + 1
        assert "the served snapshot b3 is damaged" in logged.text and "sha256 differs" in logged.text
        assert "b3 is damaged: serving b2, the newest snapshot that verifies" in logged.text
        assert client.get("/v1/nl/products/1/recommendations").json()["items"][0]["product_id"] == "2"
        damage(root / "b2" / "products.arrow")
        until(lambda: serving(client) == "b1")
    assert os.readlink(root / "current") == "b3"  # the server never writes to the snapshots root


@pytest.mark.parametrize("broken", ["damaged", "dangling", "a file"])
def test_at_start_the_newest_snapshot_that_verifies_is_served_not_503(shop, tmp_path, logged, broken):
    root = tmp_path / "snapshots"
    published(root, "b1", "b2", "b3")
    if broken == "damaged":
        damage(root / "b3" / "lists.arrow")
    else:
        (root / "current").unlink()
        if broken == "dangling":
            os.symlink("b9", root / "current")
        else:
            (root / "current").write_text("b3")
    with TestClient(create_app(settings(shop, root))) as client:
        assert serving(client) == ("b2" if broken == "damaged" else "b3")
        assert client.get("/v1/nl/products/1/recommendations").status_code == 200
    reason = {"damaged": "not serving snapshot b3", "dangling": "points at b9", "a file": "is a file, not a link"}
    assert reason[broken] in logged.text and "the newest snapshot that verifies" in logged.text


def test_an_unforeseen_error_is_a_logged_json_500_with_a_request_id(shop, logged):
    @get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    app = create_app(shop)
    app.register(boom)
    with TestClient(app) as client, logged.at_level(logging.ERROR, "etalage.server"):
        answer = client.get("/v1/boom")
        assert client.get("/health").status_code == 200
    assert answer.status_code == 500 and answer.headers["content-type"].startswith("application/json")
    request_id = answer.json()["request_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id) and request_id in answer.json()["detail"]
    entry = next(r for r in logged.records if request_id in r.getMessage())
    assert "GET /v1/boom" in entry.getMessage() and isinstance(entry.exc_info[1], RuntimeError)


ITEMS = b'{"product_id":"2","rank":1,"score":1.0},{"product_id":"3","rank":2,"score":0.5}'


def record(log: ExposureLog, visitor: str, items: bytes = b"[" + ITEMS + b"]") -> str:
    return log.append(visitor, "nl", "1", "experiment", "a", "llr", "b1", items)


def test_the_exposure_queue_is_bounded_and_keeps_what_it_cannot_write(tmp_path):
    folder = tmp_path / "exposures"
    folder.write_text("a file: neither the folder nor its spill folder can be made")
    log = ExposureLog(folder, max_queued=10)
    dropped = counted("etalage_exposures_dropped_total")
    ids = [record(log, f"0:{i}") for i in range(15)]
    assert len(set(ids)) == 15 and all(len(i) == 32 for i in ids)
    assert log.queued == 10 and counted("etalage_exposures_dropped_total") == dropped + 5
    with pytest.raises(OSError, match="nor spill it to"):
        log.flush()
    assert log.queued == 10  # back in the queue, in order, for the next flush
    folder.unlink()
    rows = pq.read_table(log.flush()).to_pylist()
    assert [r["visitor"] for r in rows] == [f"0:{i}" for i in range(10)]
    assert [r["exposure_id"] for r in rows] == ids[:10] and rows[0]["shown"] == ["2", "3"]
    assert abs(rows[0]["ts"] - dt.datetime.now(dt.UTC).replace(tzinfo=None)) < dt.timedelta(minutes=1)
    # A snapshot damaged in place can serve bytes that are not JSON: the record is kept, without its items.
    record(log, "0:damaged", b"[{broken")
    record(log, "0:fine")
    rows = pq.read_table(log.flush()).to_pylist()
    assert [(r["visitor"], r["shown"]) for r in rows] == [("0:damaged", None), ("0:fine", ["2", "3"])]
