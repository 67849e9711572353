"""The real server on a loopback socket: tenant isolation, hot reload under load, and exposures back into the build."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine import config
from engine.ingest import divolte
from engine.ingest import exposures as exposure_log
from engine.publish import warehouse
from engine.visit_order import blend_key
from server import assignment
from server.reader import ServedSnapshot
from tests.conftest import copy_built, divolte_events, run_cli, running_server

pytestmark = pytest.mark.slow  # real `etalage serve` worker processes, builds and switches under load


@pytest.fixture
def shop(built_small_shop, tmp_path) -> Path:
    """A built copy of the small shop whose server reloads and flushes quickly; returns its config path."""
    path = copy_built(built_small_shop, tmp_path) / "etalage.toml"
    text = (
        path.read_text()
        .replace("reload_seconds = 1.0", "reload_seconds = 0.2")
        .replace("flush_seconds = 5.0", "flush_seconds = 0.3")
    )
    path.write_text(text)
    return path


def fetch(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def catalogue(cfg: config.Config) -> dict[str, set[str]]:
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        rows = connection.execute("SELECT tenant, list(product_id) FROM products GROUP BY tenant").fetchall()
    return {tenant: set(ids) for tenant, ids in rows}


def test_a_tenants_answers_only_hold_its_own_products(shop):
    cfg = config.load(shop)
    products = catalogue(cfg)
    shared = set.intersection(*products.values())
    assert shared, "the test needs product ids that several tenants sell"
    with running_server(shop) as (base, _):
        for tenant, ids in products.items():
            others = set().union(*(p for t, p in products.items() if t != tenant)) - ids
            for product in sorted(ids)[:60] + sorted(shared)[:20]:
                for algorithm in ("llr", "cooccurrence", "jaccard", "popular"):
                    status, body = fetch(
                        f"{base}/v1/{tenant}/products/{product}/recommendations?algorithm={algorithm}&limit=20"
                    )
                    assert status == 200, body
                    shown = {item["product_id"] for item in body["items"]}
                    assert shown <= ids and not shown & others, (tenant, product, algorithm)
            foreign = next(iter(others), None)
            if foreign:
                status, body = fetch(f"{base}/v1/{tenant}/products/{foreign}/recommendations")
                assert status == 404 and "not in tenant" in body["detail"]


def test_workers_switch_to_a_new_snapshot_without_a_failed_or_mixed_request(shop):
    cfg = config.load(shop)
    root = cfg.snapshots.root
    old = ServedSnapshot((root / "current").resolve())
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        listed = connection.execute(
            "SELECT DISTINCT tenant, product_id FROM itemitem WHERE algorithm = 'llr' ORDER BY ALL"
        ).fetchall()
    keys = random.Random(3).sample(listed, 40)
    answers: list[tuple[int, dict]] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            tenant, product = rng.choice(keys)
            try:
                answers.append(fetch(f"{base}/v1/{tenant}/products/{product}/recommendations?algorithm=llr&limit=20"))
            except Exception as error:  # noqa: BLE001 - any failure at all is what the test counts
                failures.append(repr(error))

    with running_server(shop) as (base, process):
        threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        # A different build (3 per product instead of 20) so that a mixed answer would show.
        shop.write_text(shop.read_text().replace("top_n = 20", "top_n = 3"))
        result = run_cli("build", "--force", "--config", str(shop))
        assert result.returncode == 0, result.stderr
        new = ServedSnapshot((root / "current").resolve())
        switched = time.monotonic()
        while time.monotonic() - switched < 3:
            time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join()
        # Every worker has let go of the old snapshot's file.
        workers = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        maps = "".join(Path(f"/proc/{pid}/maps").read_text() for pid in workers)
        assert str(new.path / "itemitem.arrow") in maps and str(old.path / "itemitem.arrow") not in maps

    assert failures == [] and answers
    assert {status for status, _ in answers} == {200}
    served = {old.build_id: old, new.build_id: new}
    seen = [body["snapshot"] for _, body in answers]
    assert set(seen) == set(served), "both snapshots should have answered"
    for _, body in answers:  # each answer wholly from the snapshot it names
        snapshot = served[body["snapshot"]]
        expected = snapshot.recommendations(body["tenant"], "llr", body["product_id"], 20)
        assert body["items"] == [{"product_id": r.product_id, "rank": r.rank, "score": r.score} for r in expected]
    assert seen[-20:] == [new.build_id] * 20
    assert len(answers) > 100


def test_exposures_come_back_as_click_through_per_variant(shop):
    cfg = config.load(shop)
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        tenant, product = connection.execute(
            "SELECT tenant, product_id FROM itemitem WHERE algorithm = 'llr' AND rank = 5 ORDER BY ALL LIMIT 1"
        ).fetchone()
    visitors = [f"0:visitor{i}" for i in range(30)]
    shown = {}
    with running_server(shop) as (base, _):
        for visitor in visitors:
            status, body = fetch(f"{base}/v1/{tenant}/products/{product}/gateway?visitor={visitor}&limit=5")
            assert status == 200
            shown[visitor] = (body["variant"], body["items"][0]["product_id"], body["exposure_id"])
        deadline = time.monotonic() + 10
        # Only whole files: one being written has a dot-name (engine.ingest.exposures.files skips it).
        while sum(pq.read_metadata(p).num_rows for p in exposure_log.files(cfg.serving.exposures)) < 30:
            assert time.monotonic() < deadline, "the exposures were not flushed"
            time.sleep(0.1)

    # The first ten visitors view the first product they were shown, a minute later.
    clicked = visitors[:10]
    soon = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=1)
    events = divolte_events(
        [
            {"tenant": tenant, "session": visitor.removeprefix("0:"), "product": shown[visitor][1], "ts": soon}
            for visitor in clicked
        ]
    )
    divolte.write_avro(events, shop.parent / "events" / "avro" / "clicks" / "clicks.avro")
    # These new events move the evaluation's test week to days without sessions, which the gate would refuse.
    result = run_cli("build", "--force", "--config", str(shop))
    assert result.returncode == 0, result.stderr

    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        exposures = connection.execute("SELECT exposure_id, visitor, variant FROM exposures").fetchall()
        rates = {row[1]: row[2:] for row in connection.execute("SELECT * FROM click_through").fetchall()}
    assert sorted(e[0] for e in exposures) == sorted(s[2] for s in shown.values())
    variants = {v: assignment.assign(cfg.experiment, v).name for v in visitors}
    assert all(shown[v][0] == variants[v] for v in visitors)
    for variant in set(variants.values()):
        exposed = sum(1 for v in visitors if variants[v] == variant)
        clicks = sum(1 for v in clicked if variants[v] == variant)
        assert rates[variant] == (exposed, clicks, clicks / exposed)


def raw(base: str, request: bytes, chunk: int = 1 << 16) -> tuple[int, dict, int]:
    """Send ``request`` on a raw socket as far as the server reads it; return the status, the JSON body and bytes sent."""
    host, port = base.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        try:
            while sent < len(request):
                sent += connection.send(request[sent : sent + chunk])
        except OSError:
            pass  # the server answered and closed before the whole request was sent
        answer = b""
        while data := connection.recv(1 << 16):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body), sent


def test_oversized_and_malformed_requests_get_json_errors_and_are_not_read_whole(shop):
    with running_server(shop) as (base, _):
        big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 << 20) + b"\r\n\r\n"
        status, body, sent = raw(base, big)
        assert status == 431 and "longer than this server takes (16,384 bytes)" in body["detail"]
        assert sent < 8 << 20  # refused long before the 32 MB were sent
        status, body, _ = raw(base, b"GET /health?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 414 and "the URL is longer" in body["detail"]
        status, body, _ = raw(base, b"NOT HTTP AT ALL\r\n\r\n")
        assert status == 400 and "not a well-formed HTTP/1.1 request" in body["detail"]
        status, body, _ = raw(base, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (status, body) == (200, {"status": "ok"})
        for url, code, detail in (
            ("/v1/nl/products/1/recommendations?limit=1&limit=2", 400, "'limit' is given more than once"),
            ("/v1/nl/nothing-here", 404, "Not Found"),
        ):
            assert fetch(base + url)[0] == code and detail in fetch(base + url)[1]["detail"]
        request = urllib.request.Request(f"{base}/health", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405 and json.loads(refused.value.read())["detail"]


def snapshot_series(base: str) -> set[tuple[str, int]]:
    """The (build id, pid) pairs of ``etalage_snapshot_info`` in one scrape."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(b, int(p)) for b, p in re.findall(r'etalage_snapshot_info\{build_id="([^"]+)",pid="(\d+)"\} 1\.0', text)}


def workers_of(process: subprocess.Popen) -> set[int]:
    """The uvicorn workers of ``etalage serve`` (its children started by multiprocessing's spawn, not its helpers)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return {int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def test_snapshot_metrics_follow_switches_and_dead_workers_without_stale_series(shop):
    cfg = config.load(shop)
    old = (cfg.snapshots.root / "current").resolve().name
    with running_server(shop) as (base, process):
        deadline = time.monotonic() + 30
        while len(snapshot_series(base)) < 2:  # each worker records its snapshot once it has loaded it
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert snapshot_series(base) == {(old, pid) for pid in workers_of(process)}
        result = run_cli("build", "--force", "--config", str(shop))
        assert result.returncode == 0, result.stderr
        new = (cfg.snapshots.root / "current").resolve().name
        deadline = time.monotonic() + 30
        while {b for b, _ in snapshot_series(base)} != {new}:
            assert time.monotonic() < deadline, snapshot_series(base)
            time.sleep(0.1)

        killed = min(workers_of(process))
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(workers_of(process) - {killed}) < 2 or len(snapshot_series(base)) < 2:
            assert time.monotonic() < deadline, "uvicorn did not replace the killed worker"
            time.sleep(0.2)
        assert snapshot_series(base) == {(new, pid) for pid in workers_of(process)}
        assert killed not in {pid for _, pid in snapshot_series(base)}
    assert "Removal of labels has not been implemented" not in process.stderr.read()


def test_serve_with_a_dangling_current_serves_the_newest_snapshot_that_verifies_and_says_so(shop):
    root = config.load(shop).snapshots.root
    live = (root / "current").resolve().name
    (root / "current").unlink()
    os.symlink("20990101T000000Z-gone", root / "current")
    with running_server(shop) as (base, process):
        assert fetch(f"{base}/ready")[1]["snapshot"] == live
    stderr = process.stderr.read()
    assert "points at 20990101T000000Z-gone, which does not exist" in stderr
    assert f"serving {live}, the newest snapshot that verifies" in stderr


def test_a_visit_gets_the_served_lists_blended_by_recency(shop):
    """The session route over a socket: a blend it recomputes from itemitem, skipped unknowns, fallback, bad input."""
    cfg = config.load(shop)
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        served = connection.execute("SELECT served_algorithm FROM builds").fetchone()[0]
        tenant, visit = connection.execute(
            "SELECT tenant, list(product_id ORDER BY product_id)[:3] FROM "
            "(SELECT DISTINCT tenant, product_id FROM itemitem WHERE algorithm = $a) GROUP BY tenant ORDER BY tenant LIMIT 1",
            {"a": served},
        ).fetchone()
        lists = {
            product: connection.execute(
                "SELECT related_product_id, rank FROM itemitem WHERE tenant = $t AND algorithm = $a AND product_id = $p",
                {"t": tenant, "a": served, "p": product},
            ).fetchall()
            for product in visit
        }
        popular = connection.execute(
            "SELECT DISTINCT related_product_id, related_sessions FROM itemitem WHERE tenant = $t AND algorithm = 'popular' "
            "ORDER BY related_sessions DESC, related_product_id LIMIT 5",
            {"t": tenant},
        ).fetchall()
    # The last product viewed weighs 1, the one before 1/2, the first 1/3; each item 1/rank in a list.
    blended: dict[str, float] = {}
    for age, product in enumerate(reversed(visit), start=1):
        for related, rank in lists[product]:
            if related not in visit:
                blended[related] = blended.get(related, 0.0) + 1 / (age * rank)
    best = sorted(blended.items(), key=lambda pair: (-blend_key(pair[1]), pair[0]))[:8]
    with running_server(shop, workers=1) as (base, _):
        route = f"{base}/v1/{tenant}/sessions/recommendations"
        status, body = fetch(f"{route}?products={','.join([*visit, 'no-such-product'])}&limit=8")
        assert status == 200, body
        assert (body["algorithm"], body["used"], body["unknown"], body["fallback_used"]) == (served, 3, 1, False)
        assert [(item["product_id"], item["rank"]) for item in body["items"]] == [
            (product, rank) for rank, (product, _) in enumerate(best, start=1)
        ]
        assert [item["score"] for item in body["items"]] == pytest.approx([score for _, score in best])
        for query in ("products=", "products=no-such-product,nor-this", ""):
            status, body = fetch(f"{route}?{query}&limit=5")
            assert status == 200 and body["fallback_used"] and body["algorithm"] == "popular", body
            assert [(item["product_id"], item["score"]) for item in body["items"]] == popular
        for query, fragment in (
            ("products=" + ",".join(["p1"] * 51), "at most 50"),
            ("products=a,b%20c", "each product id"),
            ("products=a,,b", "each product id"),
            ("products=a&limit=0", "limit"),
        ):
            status, body = fetch(f"{route}?{query}")
            assert status == 400 and fragment in json.dumps(body), (query, body)
        assert fetch(f"{base}/v1/zz/sessions/recommendations?products=a")[0] == 404


def test_a_visit_blend_variant_answers_the_gateway_with_the_session_routes_list(shop):
    """An A/B arm that serves the visit: its answer is the session route's list for the visit and then the product."""
    text = shop.read_text()
    arms = '[[experiment.variants]]\nname = "visit"\nalgorithm = "visit_blend"\n\n'
    arms += '[[experiment.variants]]\nname = "llr"\nalgorithm = "llr"\n'
    shop.write_text(text[: text.index("[[experiment.variants]]")] + arms)
    cfg = config.load(shop)
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        served = connection.execute("SELECT served_algorithm FROM builds").fetchone()[0]
        tenant = connection.execute("SELECT min(tenant) FROM itemitem").fetchone()[0]
        *visit, product = [
            row[0]
            for row in connection.execute(
                "SELECT DISTINCT product_id FROM itemitem WHERE algorithm = $a AND tenant = $t ORDER BY product_id LIMIT 3",
                {"a": served, "t": tenant},
            ).fetchall()
        ]
    visitors = [f"0:v{i}" for i in range(1000)]
    arm = {
        variant.name: next(v for v in visitors if assignment.assign(cfg.experiment, v).name == variant.name)
        for variant in cfg.experiment.variants
    }
    with running_server(shop, workers=1) as (base, _):
        gateway = f"{base}/v1/{tenant}/products/{product}/gateway"
        status, session = fetch(
            f"{base}/v1/{tenant}/sessions/recommendations?products={','.join([*visit, product])}&limit=6"
        )
        assert status == 200 and not session["fallback_used"] and session["items"], session
        status, answer = fetch(f"{gateway}?visitor={arm['visit']}&visit={','.join(visit)}&limit=6")
        assert status == 200, answer
        assert (answer["variant"], answer["algorithm"], answer["fallback_used"]) == ("visit", "visit_blend", False)
        assert answer["items"] == session["items"]
        # The other arm answers the product's own list; the visit changes nothing there.
        status, own = fetch(f"{base}/v1/{tenant}/products/{product}/recommendations?algorithm=llr&limit=6")
        status, answer = fetch(f"{gateway}?visitor={arm['llr']}&visit={','.join(visit)}&limit=6")
        assert (answer["variant"], answer["algorithm"], answer["items"]) == ("llr", "llr", own["items"])
        for query, fragment in (
            ("visit=" + ",".join(["p1"] * 51), "visit names 51 products"),
            ("visit=a,,b", "each product id"),
        ):
            status, body = fetch(f"{gateway}?visitor={arm['visit']}&{query}")
            assert status == 400 and fragment in json.dumps(body), (query, body)
        deadline = time.monotonic() + 10
        while not any(
            "visit_blend" in pq.read_table(p, columns=["algorithm"]).column("algorithm").to_pylist()
            for p in exposure_log.files(cfg.serving.exposures)
        ):
            assert time.monotonic() < deadline, "the visit arm's exposure was not logged as visit_blend"
            time.sleep(0.1)
