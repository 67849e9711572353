"""Snapshots: published atomically, verified, gated, listed, rolled back, and safe from SIGKILL and a second cron run."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine import sqlfiles
from engine.config import ALGORITHMS
from engine.publish import crashpoints, gate, item_json, list_index, snapshot, warehouse
from tests.conftest import copy_built, run_cli, served_rows, sha256, tiny_tables

EXIT_BUSY, EXIT_GATE_REFUSED, EXIT_SNAPSHOT_INVALID = 4, 6, 7


def set_config(config: Path, old: str, new: str) -> None:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))


@pytest.fixture
def shop(built_small_shop, tmp_path) -> Path:
    """A copy of the small shop, built once (so a snapshot is live), keeping 2 snapshots; returns its config."""
    config = copy_built(built_small_shop, tmp_path) / "etalage.toml"
    set_config(config, "keep = 5", "keep = 2")
    return config


def live_folder(config: Path) -> Path:
    return (config.parent / "snapshots" / "current").resolve()


def snapshot_folders(config: Path) -> list[str]:
    return sorted(p.name for p in (config.parent / "snapshots").iterdir() if p.is_dir() and not p.is_symlink())


def test_a_build_publishes_a_snapshot_that_matches_the_warehouse(shop):
    root = shop.parent / "snapshots"
    current = root / "current"
    assert current.is_symlink() and not os.readlink(current).startswith("/")  # relative: the root can move
    folder = live_folder(shop)
    assert sorted(p.name for p in folder.iterdir()) == [
        "_SUCCESS",
        "itemitem.arrow",
        "lists.arrow",
        "manifest.json",
        "products.arrow",
    ]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["build_id"] == folder.name
    assert manifest["gate"]["verdict"] == "first"
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(folder / name)
        assert entry["bytes"] == (folder / name).stat().st_size

    with warehouse.connect(shop.parent / "warehouse.duckdb", read_only=True) as connection:
        assert connection.execute("SELECT max(build_id) FROM builds").fetchone()[0] == folder.name
        expected = connection.table("itemitem").to_arrow_table()
        products = connection.table("products").to_arrow_table()
        scores = dict(connection.execute("SELECT algorithm, mrr_at_20 FROM evaluation").fetchall())
        recorded = connection.execute("SELECT served_algorithm FROM builds").fetchone()[0]
    # The server memory-maps the file: every list's rows, without parsing, each also as JSON.
    assert snapshot.read_table(folder / "itemitem.arrow").column_names == ["rank", "distance_score", "item_json"]
    served = served_rows(folder)
    keys = ["algorithm", "tenant", "product_id", "rank", "distance_score"]
    assert (
        served.select(keys)
        .sort_by([(key, "ascending") for key in keys[:4]])
        .equals(expected.select(keys).sort_by([(key, "ascending") for key in keys[:4]]))
    )
    by_key = {(r["algorithm"], r["tenant"], r["product_id"], r["rank"]): r for r in expected.to_pylist()}
    for row in served.to_pylist():
        item = by_key[(row["algorithm"], row["tenant"], row["product_id"], row["rank"])]
        assert row["item_json"].endswith(",")
        assert json.loads(row["item_json"][:-1]) == {
            "product_id": item["related_product_id"],
            "rank": item["rank"],
            "score": item["distance_score"],
        }
    # Identical lists (popular's, outside the top) are written once; the rest each have their own run.
    popular = served.filter(pc.equal(served["algorithm"], "popular")).num_rows
    assert manifest["rows"]["itemitem"] < expected.num_rows - popular / 2
    algorithms = sorted(set(expected.column("algorithm").to_pylist()))
    assert manifest["rows"]["lists"] == len(algorithms) * products.num_rows
    assert manifest["rows"]["products"] == products.num_rows
    assert manifest["itemitem_parts"] == ["itemitem.arrow"] and manifest["unlisted_rows"] == 0
    assert {a: s["mrr_at_20"] for a, s in manifest["evaluation"].items()} == pytest.approx(scores, rel=1e-12)
    assert manifest["parameters"]["algorithms"]["top_n"] == 20
    # gate_algorithm = "auto": the snapshot serves the algorithm with the best MRR@20, and says so everywhere.
    best = max(score for name, score in scores.items() if name in ALGORITHMS)  # not the visit route's row
    assert scores[manifest["served_algorithm"]] == best and recorded == manifest["served_algorithm"]
    assert manifest["gate"]["algorithm"] == manifest["served_algorithm"]
    listed = run_cli("snapshots", "--config", str(shop))
    assert listed.returncode == 0 and manifest["served_algorithm"] in listed.stdout
    assert "┃ build_id" in listed.stdout  # a table where it fits
    # On an 80-column terminal the table would cut the build id (what `rollback ID` takes): row by row instead.
    narrow = run_cli("snapshots", "--config", str(shop), environment={"COLUMNS": "80"})
    assert narrow.returncode == 0 and max(map(len, narrow.stdout.splitlines())) <= 80
    assert "┃" not in narrow.stdout and "…" not in narrow.stdout
    fields = [line.split(None, 1) for line in narrow.stdout.splitlines()]
    shown = {f[0]: f[1].strip() for f in fields if len(f) == 2}
    assert shown["build_id"] == folder.name and shown["served"] == manifest["served_algorithm"]


@pytest.mark.parametrize(
    ("tables", "refusal"),
    [
        (tiny_tables(first_row=1), "lists.arrow: points outside itemitem.arrow's 2 rows"),
        (tiny_tables(first_row=2**63 - 1), "lists.arrow: points outside itemitem.arrow's 2 rows"),
        (tiny_tables(rows=1), "its rows are not exactly the lists of lists.arrow"),
        (tiny_tables(rows=-1), "lists.arrow: a negative row count"),
        (tiny_tables(score=float("nan")), "distance_score has NaN or infinite values"),
        (tiny_tables(comma=""), "an item_json value does not end with a comma"),
        (tiny_tables(ranks=(2, 3)), "a list does not run from rank 1 to its row count"),
        (tiny_tables(second=(0, 1)), "two lists start at one row with different lengths"),
        (tiny_tables(second=(1, 1)), "two lists overlap in itemitem.arrow"),
        (tiny_tables(ranks=(1, 1)), "a list does not run from rank 1 to its row count"),
        (
            {
                **tiny_tables(),
                "lists": pa.table(
                    {
                        "algorithm": ["llr", "llr"],
                        "tenant": ["nl", "nl"],
                        "product_id": ["1", "2"],
                        "first_row": pa.array([0, 1], pa.int64()),
                        "rows": pa.array([1, 1], pa.int32()),
                    }
                ).to_reader,
            },
            "a list does not run from rank 1 to its row count",  # the second list starts at rank 2
        ),
        (
            {**tiny_tables(), "products": pa.table({"tenant": ["nl", "nl"], "product_id": ["2", "1"]}).to_reader},
            "the llr block does not follow products.arrow's order",
        ),
        (
            {
                **tiny_tables(),
                "lists": pa.table(
                    {
                        "algorithm": ["llr", "llr"],
                        "tenant": ["nl", "nl"],
                        "product_id": ["1", "2"],
                        "first_row": pa.array([None, 0], pa.int64()),
                        "rows": pa.array([2, 0], pa.int32()),
                    }
                ).to_reader,
            },
            "lists.arrow: NULLs in first_row",
        ),
    ],
)
def test_the_verifier_refuses_a_list_index_the_server_could_not_trust(tmp_path, tables, refusal):
    with pytest.raises(snapshot.SnapshotInvalid, match=re.escape(refusal)):
        snapshot.stage(tmp_path, "bad", tables, {})
    assert list(tmp_path.iterdir()) == []  # a refused staging folder is removed


def test_a_hand_made_snapshot_that_lines_up_verifies_and_serves(tmp_path):
    from server.reader import Recommendation, ServedSnapshot

    served = ServedSnapshot(snapshot.stage(tmp_path, "good", tiny_tables(), {}).path)
    assert served.recommendations("nl", "llr", "1", 5) == [Recommendation("2", 1, 1.0), Recommendation("3", 2, 0.5)]
    assert served.items_json("nl", "llr", "1", 1) == b'[{"product_id":"2","rank":1,"score":1.0}]'
    assert served.items_json("nl", "llr", "2", 5) == b"[]"


def test_the_verifier_refuses_a_flipped_byte_a_missing_file_and_a_missing_marker(shop, tmp_path):
    good = live_folder(shop)
    assert snapshot.verify(good).build_id == good.name

    def broken(name: str) -> Path:
        copy = tmp_path / "broken" / name
        shutil.copytree(good, copy)
        return copy

    flipped = broken("flipped")
    data = bytearray((flipped / "itemitem.arrow").read_bytes())
    data[len(data) // 2] ^= 0x01
    (flipped / "itemitem.arrow").write_bytes(bytes(data))
    with pytest.raises(snapshot.SnapshotInvalid, match=r"itemitem\.arrow: sha256 differs"):
        snapshot.verify(flipped)

    missing = broken("missing")
    (missing / "products.arrow").unlink()
    with pytest.raises(snapshot.SnapshotInvalid, match=r"products\.arrow: missing"):
        snapshot.verify(missing)

    unfinished = broken("unfinished")
    (unfinished / "_SUCCESS").unlink()
    with pytest.raises(snapshot.SnapshotInvalid, match="no _SUCCESS marker"):
        snapshot.verify(unfinished)

    truncated = broken("truncated")
    with open(truncated / "itemitem.arrow", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(snapshot.SnapshotInvalid, match="bytes, the manifest says"):
        snapshot.verify(truncated)


@pytest.mark.slow
def test_rollback_verifies_switches_and_refuses_a_damaged_or_unknown_snapshot(shop):
    first = live_folder(shop).name
    assert run_cli("build", "--config", str(shop)).returncode == 0
    second = live_folder(shop).name
    assert first != second

    listing = run_cli("snapshots", "--config", str(shop), "--verify")
    assert listing.returncode == 0, listing.stderr
    lines = [line for line in listing.stdout.splitlines() if first in line or second in line]
    assert [second in lines[0], first in lines[1]] == [True, True]  # newest first
    assert "*" in lines[0] and "*" not in lines[1] and lines[0].count("ok") == 1

    result = run_cli("rollback", "--config", str(shop))
    assert result.returncode == 0, result.stderr
    assert f"live snapshot is now {first} (was {second})" in result.stderr
    assert live_folder(shop).name == first

    # A damaged snapshot is refused and the live one stays.
    target = shop.parent / "snapshots" / second / "itemitem.arrow"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    result = run_cli("rollback", second, "--config", str(shop))
    assert result.returncode == EXIT_SNAPSHOT_INVALID
    assert "sha256 differs" in result.stderr and "Traceback" not in result.stderr
    assert live_folder(shop).name == first
    listing = run_cli("snapshots", "--config", str(shop), "--verify")
    assert listing.returncode == EXIT_SNAPSHOT_INVALID and "INVALID" in listing.stdout
    assert f"1 of 2 snapshots failed verification ({second})" in listing.stderr
    assert run_cli("snapshots", "--config", str(shop)).returncode == 0  # listing alone checks nothing

    for hostile in ("no-such-build", "../snapshots", ".staging-x", "/etc"):
        result = run_cli("rollback", hostile, "--config", str(shop))
        assert result.returncode == EXIT_SNAPSHOT_INVALID, hostile
        assert "no snapshot" in result.stderr
    assert live_folder(shop).name == first


@pytest.mark.slow
def test_old_snapshots_are_pruned_but_never_the_live_one(shop):
    first = live_folder(shop).name
    for _ in range(2):
        assert run_cli("build", "--config", str(shop)).returncode == 0
    kept = snapshot_folders(shop)
    assert len(kept) == 2 and first not in kept  # keep = 2
    assert run_cli("rollback", "--config", str(shop)).returncode == 0
    assert live_folder(shop).name == kept[0]
    # Pruning to one keeps the newest and the live (older) one.
    assert snapshot.prune(shop.parent / "snapshots", 1) == []
    assert snapshot_folders(shop) == kept
    assert run_cli("build", "--config", str(shop)).returncode == 0
    assert len(snapshot_folders(shop)) == 2 and live_folder(shop).name == snapshot_folders(shop)[-1]


@pytest.mark.slow
def test_the_gate_refuses_a_worse_build_and_force_publishes_it(shop):
    live = live_folder(shop)
    warehouse_before = sha256(shop.parent / "warehouse.duckdb")
    # One recommendation per product instead of twenty: MRR@20 can only count rank-1 hits, far below the live lists.
    set_config(shop, "top_n = 20", "top_n = 1")
    result = run_cli("build", "--config", str(shop))
    assert result.returncode == EXIT_GATE_REFUSED, result.stderr
    served = json.loads((live / "manifest.json").read_text())["served_algorithm"]
    assert f"below the live snapshot's {served}" in result.stderr
    assert "not published (--force publishes anyway)" in result.stderr and "Traceback" not in result.stderr
    assert live_folder(shop) == live
    assert sha256(shop.parent / "warehouse.duckdb") == warehouse_before
    assert snapshot_folders(shop) == [live.name]

    forced = run_cli("build", "--force", "--config", str(shop))
    assert forced.returncode == 0, forced.stderr
    assert "gate: forced" in forced.stderr
    now = live_folder(shop)
    assert now != live
    assert json.loads((now / "manifest.json").read_text())["gate"]["verdict"] == "forced"
    assert snapshot.verify(now).manifest["parameters"]["algorithms"]["top_n"] == 1


@pytest.mark.slow
def test_two_builds_at_once_exactly_one_publishes(shop):
    before = set(snapshot_folders(shop))
    command = [sys.executable, "-m", "engine", "build", "--config", str(shop)]
    processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in processes)
    assert [code for code, _ in outcomes] == [0, EXIT_BUSY]
    assert "another build or rollback is publishing" in outcomes[1][1]
    assert len(set(snapshot_folders(shop)) - before) == 1


@pytest.mark.slow
@pytest.mark.parametrize("point", [p for p in crashpoints.POINTS if p != "ingested"])  # no new files here
def test_sigkill_at_any_point_leaves_the_live_snapshot_intact(shop, point):
    live = live_folder(shop)
    checksums = {p.name: sha256(p) for p in live.iterdir()}
    warehouse_before = sha256(shop.parent / "warehouse.duckdb")

    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "build", "--config", str(shop)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETALAGE_PAUSE_AT": point},
    )
    for line in process.stderr:
        if line.startswith(f"paused at {point}"):
            break
    else:
        pytest.fail(f"the build never reached {point}: exit {process.wait()}")
    process.send_signal(signal.SIGKILL)
    process.wait()

    # The live snapshot is the same folder, byte for byte, and verifies.
    assert live_folder(shop) == live
    assert {p.name: sha256(p) for p in live.iterdir()} == checksums
    snapshot.verify(live)
    if (
        point != "before-switch"
    ):  # by then the warehouse has been replaced whole (docs/operations.md: what a build guarantees)
        assert sha256(shop.parent / "warehouse.duckdb") == warehouse_before
    with warehouse.connect(shop.parent / "warehouse.duckdb", read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM itemitem").fetchone()[0] > 0

    # The next build succeeds, cleans up after the killed one, and nothing piles up.
    result = run_cli("build", "--config", str(shop))
    assert result.returncode == 0, result.stderr
    root = shop.parent / "snapshots"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [".lock"]
    assert len(snapshot_folders(shop)) <= 2
    assert sorted(p.name for p in shop.parent.iterdir() if p.name.startswith(".")) == []


def live_with(score: float | None, served: str = "llr") -> snapshot.Snapshot:
    evaluation = None if score is None else {served: {"mrr_at_20": score}, "popular": {"mrr_at_20": 0.0}}
    return snapshot.Snapshot(Path("live"), {"build_id": "live", "evaluation": evaluation, "served_algorithm": served})


@pytest.mark.parametrize(
    ("new", "live", "force", "verdict"),
    [
        (0.10, None, False, "first"),
        (None, 0.10, False, "skipped"),
        (0.10, "no score", False, "skipped"),
        (0.0951, 0.10, False, "passed"),
        (0.0949, 0.10, False, "refused"),
        (0.0949, 0.10, True, "forced"),
        (0.20, 0.10, False, "passed"),
    ],
)
def test_gate_decisions(new, live, force, verdict):
    scores = None if new is None else {"llr": {"mrr_at_20": new}}
    current = None if live is None else live_with(None if live == "no score" else live)
    decision = gate.decide(scores, current, "llr", 0.05, force)
    assert decision.verdict == verdict
    assert decision.publish == (verdict != "refused")


def test_the_gate_compares_the_new_best_with_what_the_live_snapshot_serves():
    """auto may serve another algorithm than the live snapshot: its score is set against the live one's served list."""
    scores = {"llr": {"mrr_at_20": 0.08}, "transitions": {"mrr_at_20": 0.094}, "popular": {"mrr_at_20": 0.01}}
    chosen = gate.served_algorithm(scores, "auto").algorithm
    assert chosen == "transitions"
    passed = gate.decide(scores, live_with(0.098, served="sequential_rules"), chosen, 0.05, False)
    assert (passed.verdict, passed.live_algorithm) == ("passed", "sequential_rules")
    refused = gate.decide(scores, live_with(0.10, served="sequential_rules"), chosen, 0.05, False)
    assert refused.verdict == "refused" and "live snapshot's sequential_rules 0.1000" in refused.reason
    assert gate.served_algorithm(scores, "llr") == gate.Served("llr", "configured")  # whatever the scores


def test_auto_breaks_ties_by_the_order_of_the_algorithms_and_serves_llr_when_nothing_was_scored():
    tied = {"transitions_both": {"mrr_at_20": 0.1}, "cooccurrence": {"mrr_at_20": 0.1}, "llr": {"mrr_at_20": 0.05}}
    assert gate.served_algorithm(tied, "auto").algorithm == "cooccurrence"
    assert gate.served_algorithm(dict(reversed(tied.items())), "auto").algorithm == "cooccurrence"
    assert gate.served_algorithm({}, "auto") == gate.served_algorithm(None, "auto")
    assert gate.served_algorithm({}, "auto") == gate.Served(snapshot.UNSCORED, "nothing was scored")
    # A build that does not compute llr serves the first algorithm it computes, not a list it lacks.
    assert gate.served_algorithm({}, "auto", ("transitions", "popular")).algorithm == "transitions"


def interval(mrr: float, best: str, low: float | None, high: float | None) -> dict:
    """An evaluation row's score and its interval against ``best``, as a manifest holds them."""
    return {"mrr_at_20": mrr, "compared_with": best, "mrr_at_20_diff_low": low, "mrr_at_20_diff_high": high}


def test_auto_keeps_the_live_algorithm_while_the_best_is_not_clearly_better():
    scores = {
        "cooccurrence": interval(0.100, "cooccurrence", 0.0, 0.0),
        "llr": interval(0.097, "cooccurrence", -0.007, 0.001),  # within noise of the best
        "popular": interval(0.020, "cooccurrence", -0.09, -0.07),  # clearly worse
    }
    kept = gate.served_algorithm(scores, "auto", live="llr")
    assert kept.algorithm == "llr"
    assert kept.reason == (
        "kept from the live snapshot: cooccurrence scores 0.0030 more mrr_at_20, "
        "but the 95% interval of the difference (-0.0070 to +0.0010) holds 0"
    )
    best = gate.Served("cooccurrence", "the best mrr_at_20 on the held-out days")
    assert gate.served_algorithm(scores, "auto", live="popular") == best  # clearly worse: switched
    assert gate.served_algorithm(scores, "auto", live="cooccurrence") == best
    assert gate.served_algorithm(scores, "auto", live="transitions") == best  # not scored in this build
    assert gate.served_algorithm(scores, "auto") == best  # no live snapshot
    assert gate.served_algorithm(scores, "popular", live="llr") == gate.Served("popular", "configured")
    # Only an interval against this build's best tells: one against another algorithm, or none, does not.
    assert (
        gate.served_algorithm({**scores, "llr": interval(0.097, "popular", -0.007, 0.001)}, "auto", live="llr") == best
    )
    assert (
        gate.served_algorithm({**scores, "llr": interval(0.097, "cooccurrence", None, None)}, "auto", live="llr")
        == best
    )


@pytest.mark.slow
def test_hourly_builds_keep_serving_the_live_algorithm_until_the_best_is_clearly_better(shop):
    """A real build with ``auto`` after a snapshot that serves an algorithm within noise of the best, and one that is not.

    Among these four algorithms the small shop's best, cooccurrence, cannot be
    told from sequential_rules (its interval reaches 0) but clearly beats llr.
    """
    set_config(
        shop, "[algorithms]\n", '[algorithms]\ncompute = ["cooccurrence", "sequential_rules", "llr", "popular"]\n'
    )
    assert run_cli("build", "--force", "--config", str(shop)).returncode == 0
    with warehouse.connect(shop.parent / "warehouse.duckdb", read_only=True) as connection:
        rows = dict(
            connection.execute(
                "SELECT algorithm, mrr_at_20_diff_high FROM evaluation WHERE build_id = (SELECT max(build_id) FROM builds)"
            ).fetchall()
        )
    best = snapshot.live(shop.parent / "snapshots").served_algorithm
    assert best == "cooccurrence" and rows["sequential_rules"] >= 0 > rows["llr"], rows
    for live, served, reason in (
        ("sequential_rules", "sequential_rules", "kept from the live snapshot"),
        ("llr", best, "the best"),
    ):
        set_config(shop, 'gate_algorithm = "auto"', f'gate_algorithm = "{live}"')
        assert run_cli("build", "--force", "--config", str(shop)).returncode == 0
        assert snapshot.live(shop.parent / "snapshots").served_algorithm == live
        set_config(shop, f'gate_algorithm = "{live}"', 'gate_algorithm = "auto"')
        result = run_cli("build", "--config", str(shop))
        assert result.returncode == 0, result.stderr
        manifest = snapshot.live(shop.parent / "snapshots").manifest
        assert manifest["served_algorithm"] == served and manifest["served_reason"].startswith(reason)
        assert f"serves {served} ({reason}" in result.stderr
        with warehouse.connect(shop.parent / "warehouse.duckdb", read_only=True) as connection:
            assert (
                connection.execute("SELECT served_algorithm FROM builds ORDER BY build_id DESC").fetchone()[0] == served
            )


def test_a_snapshots_folders_are_checksummed_too(tmp_path):
    extra = tmp_path / "index"
    extra.mkdir()
    (extra / "forest-nl.ann").write_bytes(bytes(range(256)) * 10)
    (extra / "items.json").write_text('{"dim": 4}')
    staged = snapshot.stage(tmp_path / "root", "b1", tiny_tables(), {}, folders={"visual": extra})
    assert set(staged.manifest["files"]) == {
        "itemitem.arrow",
        "lists.arrow",
        "products.arrow",
        "visual/forest-nl.ann",
        "visual/items.json",
    }
    assert staged.manifest["rows"] == {"itemitem": 2, "lists": 2, "products": 2}
    snapshot.verify(staged.path)
    forest = staged.path / "visual" / "forest-nl.ann"
    forest.write_bytes(forest.read_bytes()[:-1] + b"\x01")
    with pytest.raises(snapshot.SnapshotInvalid, match=r"forest-nl\.ann: sha256 differs"):
        snapshot.verify(staged.path)
    forest.unlink()
    with pytest.raises(snapshot.SnapshotInvalid, match=r"forest-nl\.ann: missing"):
        snapshot.verify(staged.path)
    manifest = json.loads((staged.path / "manifest.json").read_text())
    del manifest["files"]["visual/forest-nl.ann"]
    manifest["files"]["../../etc/passwd"] = {"bytes": 1, "sha256": "0"}
    (staged.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(snapshot.SnapshotInvalid, match="outside the snapshot"):
        snapshot.verify(staged.path)


def test_a_snapshot_without_a_readable_manifest_fails_verify_and_cannot_be_rolled_back_to(tmp_path):
    config_path = tmp_path / "etalage.toml"
    config_path.write_text('[catalogue]\npath = "catalogue.parquet"\n[events]\nparquet = ["events/*.parquet"]\n')
    broken = tmp_path / "snapshots" / "20261101T000000Z-abcdef"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    os.symlink(broken.name, tmp_path / "snapshots" / "current")
    listing = run_cli("snapshots", "--config", str(config_path), "--verify")
    assert listing.returncode == EXIT_SNAPSHOT_INVALID and "INVALID" in listing.stdout
    assert f"the live snapshot {broken} has no readable manifest" in listing.stderr
    rolled = run_cli("rollback", "--config", str(config_path))
    assert rolled.returncode == EXIT_SNAPSHOT_INVALID and "no snapshot verifies" in rolled.stderr
    assert "Traceback" not in listing.stderr + rolled.stderr


def test_published_files_and_folders_are_read_only_yet_pruned_by_their_owner(tmp_path):
    root = tmp_path / "snapshots"
    for build_id in ("b1", "b2", "b3"):
        extra = tmp_path / "index"
        extra.mkdir(exist_ok=True)
        (extra / "items.json").write_text("{}")
        snapshot.publish(root, snapshot.stage(root, build_id, tiny_tables(), {}, folders={"visual": extra}))
    for path in [root / "b3", *(root / "b3").rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o555 if path.is_dir() else 0o444), path
    # Root ignores file modes: the owner's view needs an ordinary user, here `nobody`, owning the snapshots,
    # in a forked child (it could not run this interpreter, under /root) that works from inside the root.
    nobody = 65534
    for path in [root, *root.rglob("*")]:
        os.chown(path, nobody, nobody, follow_symlinks=False)
    child = os.fork()
    if child == 0:
        code = 3
        try:
            os.chdir(root)
            os.setgid(nobody)
            os.setuid(nobody)
            try:
                open("b3/itemitem.arrow", "r+b")  # noqa: SIM115 - it must fail
                code = 1
            except PermissionError:
                code = 0 if snapshot.prune(Path(), 1) == ["b1", "b2"] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # 1: the owner could write; 2: prune did not remove them
    assert snapshot_folders_of(root) == ["b3"]


def snapshot_folders_of(root: Path) -> list[str]:
    return [folder.name for folder in snapshot.folders(root)]


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["dangling", "a file", "no manifest"])
def test_a_build_repairs_a_broken_current_before_it_computes(shop, broken):
    root = shop.parent / "snapshots"
    good = live_folder(shop).name
    current = root / "current"
    current.unlink()
    if broken == "dangling":
        os.symlink("20990101T000000Z-gone", current)
    elif broken == "a file":
        current.write_text(good)
    else:
        (root / "20990101T000000Z-empty").mkdir()
        os.symlink("20990101T000000Z-empty", current)
    # Paused where computing starts: by then `current` already points at the newest snapshot that verifies.
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "build", "--config", str(shop)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETALAGE_PAUSE_AT": "compute"},
    )
    said = []
    for line in process.stderr:
        said.append(line)
        if line.startswith("paused at compute"):
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert os.readlink(current) == good
    assert f"it now points at {good}, the newest snapshot that verifies" in "".join(said)
    result = run_cli("build", "--config", str(shop))
    assert result.returncode == 0, result.stderr
    assert live_folder(shop).name not in (good, "20990101T000000Z-empty")


def test_a_folder_named_current_stops_a_build_before_it_computes(shop):
    root = shop.parent / "snapshots"
    (root / "current").unlink()
    (root / "current").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "engine", "build", "--config", str(shop)],
        capture_output=True,
        text=True,
        env={**os.environ, "ETALAGE_PAUSE_AT": "compute"},  # a build that got that far would never exit
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_SNAPSHOT_INVALID
    assert f"{root / 'current'} is a folder, not a link to a snapshot: move it away" in result.stderr


@pytest.mark.slow
def test_rollback_with_a_dangling_current_picks_the_newest_snapshot_that_verifies(shop):
    first = live_folder(shop).name
    assert run_cli("build", "--config", str(shop)).returncode == 0
    second = live_folder(shop).name
    target = shop.parent / "snapshots" / second / "lists.arrow"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:-1] + b"\x01")
    (shop.parent / "snapshots" / "current").unlink()
    os.symlink("20990101T000000Z-gone", shop.parent / "snapshots" / "current")
    for command in (["snapshots", "--verify"], ["rollback", "--config", str(shop)]):
        if command[0] == "snapshots":
            listing = run_cli(*command, "--config", str(shop))
            assert listing.returncode == EXIT_SNAPSHOT_INVALID
            assert "points at 20990101T000000Z-gone, which does not exist" in listing.stderr
            continue
        result = run_cli(*command)
        assert result.returncode == 0, result.stderr
        assert f"live snapshot is now {first} (" in result.stderr and "which does not exist" in result.stderr
        assert f"skipping snapshot {second}: " in result.stderr
    assert live_folder(shop).name == first


def test_item_json_renders_the_json_of_the_sql_definition():
    """engine/publish/item_json.py gives sql/snapshot_itemitem.sql's JSON values, ids that JSON must escape included."""
    ids = ["1000001", 'say "hi"', "back\\slash", "ünïcode", "tab\there"]
    rows = pa.table(
        {
            "related_product_id": pa.array(ids * 40),
            "rank": pa.array([r % 100 + 1 for r in range(200)], pa.int32()),
            "distance_score": pa.array([0.0, 1.0, 0.1, 1e-7, 123456789.123, 2 / 3, 1e300, 5e-324] * 25),
        }
    )
    rendered = item_json.rendered(rows["related_product_id"].combine_chunks(), rows["rank"].combine_chunks(),
                                  rows["distance_score"].combine_chunks()).to_pylist()  # fmt: skip
    with warehouse.connect() as connection:
        connection.register("itemitem", rows)
        by_sql = [row[-1] for row in sqlfiles.query(connection, "snapshot_itemitem").fetchall()]
    assert all(text.endswith(",") for text in rendered)
    assert [json.loads(text[:-1]) for text in rendered] == [json.loads(text[:-1]) for text in by_sql]


def test_item_json_reads_related_ids_held_any_way():
    """Plain text, chunks sharing one dictionary (a kernel's rows) or chunks with dictionaries of their own: the same JSON."""
    ids = pa.array(["7", "8", 'say "hi"', "9", "7", "8"])
    rows = pa.table({"rank": pa.array(range(1, 7), pa.int32()), "distance_score": pa.array([0.5] * 6)})
    rows = pa.Table.from_batches(rows.to_batches(max_chunksize=2))
    shared = pa.array(["9", "8", "7", 'say "hi"'])
    held = {
        "plain": pa.chunked_array([ids.slice(0, 2), ids.slice(2)]),
        "shared": pa.chunked_array(
            [pa.DictionaryArray.from_arrays(pa.array(i, pa.int32()), shared) for i in ([2, 1], [3, 0], [2, 1])]
        ),
        "own": pa.chunked_array([ids.slice(0, 3).dictionary_encode(), ids.slice(3).dictionary_encode()]),
    }
    expected = item_json.rendered(ids, rows["rank"].combine_chunks(), rows["distance_score"].combine_chunks())
    for name, related in held.items():
        rendered = item_json.reader(rows, related).read_all().column("item_json").combine_chunks()
        assert rendered.equals(expected), name


def test_list_index_gives_the_rows_of_the_sql_definition(tmp_path):
    """engine/publish/list_index.py gives sql/snapshot_lists.sql's rows, products without lists and algorithms included."""
    rows = pa.table(
        {
            "tenant": ["be", "be", "be", "nl", "nl", "nl", "nl", "nl"],
            "algorithm": ["llr", "llr", "popular", "cooccurrence", "cooccurrence", "cooccurrence", "llr", "popular"],
            "product_id": ["1", "1", "1", "7", "7", "8", "8", "7"],
            "rank": pa.array([1, 2, 1, 1, 2, 1, 1, 1], pa.int32()),
        }
    )
    products = pa.table({"tenant": ["nl", "be", "nl", "nl", "be"], "product_id": ["8", "1", "7", "9", "2"]})
    with warehouse.connect() as connection:
        connection.register("given_products", products)
        connection.execute("CREATE TABLE products AS FROM given_products")
        connection.register("itemitem_rows", rows.append_column("row_number", pa.array(range(rows.num_rows))))
        by_sql = sqlfiles.query(connection, "snapshot_lists").to_arrow_table()
    by_index = list_index.positions(rows, products)
    assert by_index.num_rows == 3 * 5
    assert by_index.to_pylist() == by_sql.cast(by_index.schema).to_pylist()


def lists_of(version: dict[str, list[float]]) -> pa.Table:
    """``itemitem`` rows in its order for tenant nl: each product's list as (related product, score) from ``version``.

    ``popular`` lists are the top three of ``popular_top`` less the product itself: those of the products outside
    its top three are identical.
    """
    rows = []
    for product, scores in version["cooccurrence"].items():
        rows += [("cooccurrence", product, rank, f"{product}-{rank}", score) for rank, score in enumerate(scores, 1)]
    top = version["popular_top"]
    for product in version["cooccurrence"]:
        related = [p for p in top if p != product][:3]
        rows += [("popular", product, rank, p, float(10 - top.index(p))) for rank, p in enumerate(related, 1)]
    rows.sort(key=lambda row: (row[0], row[1], row[2]))
    algorithm, product, rank, related, score = zip(*rows, strict=True)
    return pa.table(
        {
            "tenant": ["nl"] * len(rows),
            "algorithm": algorithm,
            "product_id": product,
            "rank": pa.array(rank, pa.int32()),
            "related_product_id": related,
            "distance_score": score,
        }
    )


def test_a_snapshot_keeps_the_live_ones_unchanged_lists_in_its_files(tmp_path, caplog):
    """Unchanged lists stay in the live snapshot's part (hard-linked), changed ones are written; a mostly stale part is not kept."""
    from engine.publish import served
    from server.reader import ServedSnapshot

    root = tmp_path / "snapshots"
    products = pa.table({"tenant": ["nl"] * 6, "product_id": [f"p{n}" for n in range(6)]})
    first = {"cooccurrence": {f"p{n}": [3.0, 2.0, 1.0] for n in range(6)}, "popular_top": ["p0", "p1", "p2", "p3"]}
    second = {
        **first,
        "cooccurrence": {**first["cooccurrence"], "p0": [3.5, 2.0, 1.0]},
        "popular_top": ["p1", "p0", "p2", "p3"],
    }
    third = {**second, "cooccurrence": {**second["cooccurrence"], "p1": [9.0, 1.0], "p2": [8.0, 7.0, 1.0]}}

    def published(build_id: str, version: dict) -> snapshot.Snapshot:
        staged = served.stage(root, build_id, lists_of(version), products, {}, live=snapshot.live(root))
        return snapshot.publish(root, staged)

    def from_scratch(version: dict) -> pa.Table:
        return served_rows(served.stage(tmp_path / "scratch", "x", lists_of(version), products, {}).path)

    b1 = published("b1", first)
    # 6 cooccurrence lists and 4 distinct popular ones (p0's, p1's, p2's and the one the other three share), 3 rows each.
    assert b1.manifest["rows"]["itemitem"] == 30 and b1.manifest["itemitem_parts"] == ["itemitem.arrow"]
    b2 = published("b2", second)
    # p0's cooccurrence list and every popular list changed: 15 rows written, b1's 30 kept (half still served).
    assert b2.manifest["itemitem_parts"] == ["itemitem.b1.arrow", "itemitem.arrow"]
    assert b2.manifest["rows"]["itemitem"] == 15 and b2.manifest["unlisted_rows"] == 15
    assert os.stat(b2.file("itemitem.b1.arrow")).st_ino == os.stat(b1.file("itemitem.arrow")).st_ino
    assert os.stat(b2.file("products.arrow")).st_ino == os.stat(b1.file("products.arrow")).st_ino
    assert served_rows(b2.path).equals(from_scratch(second))
    snapshot.prune(root, keep=1)  # b1's folder goes; its part lives on in b2's
    assert not b1.path.exists() and snapshot.verify(b2.path)
    reader = ServedSnapshot(b2.path)
    assert reader.items_json("nl", "cooccurrence", "p0", 1) == b'[{"product_id":"p0-1","rank":1,"score":3.5}]'
    assert reader.items_json("nl", "cooccurrence", "p5", 1) == b'[{"product_id":"p5-1","rank":1,"score":3.0}]'
    b3 = published("b3", third)
    # Two more changed lists leave 9 of b1's 30 rows served: under half, so they are written again with the change.
    assert b3.manifest["itemitem_parts"] == ["itemitem.b2.arrow", "itemitem.arrow"]
    assert b3.manifest["rows"]["itemitem"] == 3 * 3 + 2 + 3 and b3.manifest["unlisted_rows"] == 0
    assert served_rows(b3.path).equals(from_scratch(third))

    # A live part that no longer matches its manifest is never carried on: everything is written again,
    # whether the damage is among its rows (its checksum shows it) or in its footer (it no longer opens).
    def flip(part: Path, where: float) -> None:
        part.chmod(0o644)
        with open(part, "r+b") as handle:
            handle.seek(int(part.stat().st_size * where))
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))

    def written_again(build_id: str) -> None:
        again = published(build_id, third)
        assert again.manifest["itemitem_parts"] == ["itemitem.arrow"]
        assert again.manifest["rows"]["itemitem"] == 5 * 3 + 2 + 4 * 3
        assert served_rows(again.path).equals(from_scratch(third))

    flip(b3.file("itemitem.b2.arrow"), 0.5)
    written_again("b4")
    b5 = published("b5", third)  # nothing changed: all of b4's own part is linked
    assert (
        b5.manifest["itemitem_parts"] == ["itemitem.b4.arrow", "itemitem.arrow"]
        and b5.manifest["rows"]["itemitem"] == 0
    )
    flip(b5.file("itemitem.b4.arrow"), 0.99)
    written_again("b6")
    assert caplog.text.count("not reusing the live snapshot's parts") == 2


def test_snapshots_on_a_file_system_without_hard_links_are_written_whole(tmp_path, monkeypatch, caplog):
    """Where the snapshots' file system refuses hard links (a network share, say), a build writes every list instead."""
    from engine.publish import served

    def refused(source, target):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source))

    root = tmp_path / "snapshots"
    products = pa.table({"tenant": ["nl"] * 3, "product_id": ["p0", "p1", "p2"]})
    version = {"cooccurrence": {f"p{n}": [2.0, 1.0] for n in range(3)}, "popular_top": ["p0", "p1", "p2", "p3"]}
    first = snapshot.publish(root, served.stage(root, "b1", lists_of(version), products, {}))
    monkeypatch.setattr(os, "link", refused)
    second = served.stage(root, "b2", lists_of(version), products, {}, live=first)
    assert second.manifest["itemitem_parts"] == ["itemitem.arrow"] and snapshot.verify(second.path)
    assert second.manifest["rows"] == first.manifest["rows"]
    assert "writing every list" in caplog.text and "cannot hard-link" in caplog.text
