"""The visual stage inside ``etalage build``: real pictures, the real encoder, a real Annoy index in the snapshot."""

from __future__ import annotations

import io
import shutil
import tomllib
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute  # pa.compute
import pyarrow.parquet as pq
import pytest

from engine import build, config
from engine.pipeline import visual_stage
from engine.publish import snapshot, warehouse
from models.index import VisualIndex
from tests.conftest import run_cli
from tests.test_docs import documented_tables


def copied(shop: Path, folder: Path) -> config.Config:
    """A private copy of the shop, warehouse and snapshots included, so a test may rebuild or damage it."""
    shutil.copytree(shop, folder, symlinks=True)
    return config.load(folder / "etalage.toml")


def rows(cfg: config.Config, query: str, **values) -> list[tuple]:
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        return connection.execute(query, values).fetchall()


def cached(cfg: config.Config, query: str) -> list[tuple]:
    """Rows from the embeddings cache file."""
    with duckdb.connect(str(visual_stage.cache_path(cfg)), read_only=True) as connection:
        return connection.execute(query).fetchall()


def test_visual_rows_stay_in_their_tenant_never_name_the_product_and_are_ranked(visual_shop):
    cfg = config.load(visual_shop / "etalage.toml")
    strays = rows(
        cfg,
        """
        SELECT count(*) FROM itemitem AS i
        LEFT JOIN products AS p ON p.tenant = i.tenant AND p.product_id = i.related_product_id
        WHERE i.algorithm IN ('visual', 'visual_blend') AND (p.product_id IS NULL OR i.related_product_id = i.product_id)
    """,
    )
    assert strays == [(0,)]
    lists = rows(
        cfg,
        """
        SELECT algorithm, count(DISTINCT (tenant, product_id)), bool_and(rank BETWEEN 1 AND 20),
               bool_and(distance_score BETWEEN -1 AND 1.000001), count(cooccurrence)
        FROM itemitem WHERE algorithm = 'visual' GROUP BY ALL
    """,
    )
    pictured = rows(cfg, "SELECT count(*) FROM products WHERE image IS NOT NULL")[0][0]
    assert lists == [("visual", pictured, True, True, 0)]  # every pictured product has a list, with no click evidence
    dense = rows(
        cfg,
        """
        SELECT count(*) FROM (
            SELECT tenant, algorithm, product_id, max(rank) = count(*) AND min(rank) = 1 AS dense
            FROM itemitem GROUP BY ALL) WHERE NOT dense
    """,
    )
    assert dense == [(0,)]


def test_the_blend_keeps_llr_for_viewed_products_and_gives_the_rest_their_looks(visual_shop):
    cfg = config.load(visual_shop / "etalage.toml")
    least = cfg.visual.min_sessions
    # A product with enough sessions starts with its whole llr list (topped up with looks if short) ...
    warm = rows(
        cfg,
        """
        WITH llr AS (SELECT * FROM itemitem WHERE algorithm = 'llr'),
             blend AS (SELECT * FROM itemitem WHERE algorithm = 'visual_blend')
        SELECT count(*), count(b.related_product_id)
        FROM llr JOIN item_counts AS c USING (tenant, product_id)
        LEFT JOIN blend AS b USING (tenant, product_id, rank, related_product_id)
        WHERE c.sessions >= $least
    """,
        least=least,
    )
    assert warm[0][0] > 100 and warm[0][0] == warm[0][1]
    # ... and one with fewer sessions gets exactly its visual list.
    cold = rows(
        cfg,
        """
        SELECT count(*) FROM itemitem AS v
        LEFT JOIN item_counts AS c USING (tenant, product_id)
        LEFT JOIN itemitem AS b ON b.algorithm = 'visual_blend' AND b.tenant = v.tenant AND b.product_id = v.product_id
             AND b.rank = v.rank AND b.related_product_id = v.related_product_id
        WHERE v.algorithm = 'visual' AND coalesce(c.sessions, 0) < $least AND b.product_id IS NULL
    """,
        least=least,
    )
    assert cold == [(0,)]


def test_the_look_alikes_are_evaluated_and_the_index_is_in_the_snapshot(visual_shop):
    cfg = config.load(visual_shop / "etalage.toml")
    scored = {row[0] for row in rows(cfg, "SELECT algorithm FROM evaluation")}
    assert {"visual", "visual_blend", "llr"} <= scored
    live = snapshot.live(cfg.snapshots.root)
    assert set(live.manifest["evaluation"]) >= {"visual", "visual_blend"}
    index_files = [name for name in live.manifest["files"] if name.startswith("visual/")]
    assert {"visual/visual.json", "visual/visual-items.arrow"} <= set(index_files)
    index = VisualIndex.load(live.path / "visual")
    # The served index gives the same top 20 as the warehouse's visual rows.
    tenant, product = rows(cfg, "SELECT tenant, product_id FROM itemitem WHERE algorithm = 'visual' LIMIT 1")[0]
    listed = [
        r[0]
        for r in rows(
            cfg,
            """
        SELECT related_product_id FROM itemitem WHERE algorithm = 'visual' AND tenant = $t AND product_id = $p ORDER BY rank
    """,
            t=tenant,
            p=product,
        )
    ]
    assert [n.product_id for n in index.similar(tenant, product, 20)] == listed


@pytest.mark.slow
def test_embeddings_are_cached_so_a_rebuild_encodes_only_changed_pictures(visual_shop, tmp_path):
    cfg = copied(visual_shop, tmp_path / "shop")
    first = cached(cfg, "SELECT count(*), count(DISTINCT model_id) FROM embeddings")[0]
    assert first[0] > 100 and first[1] == 1
    again = build.build(cfg)
    assert again.visual.encoded == 0 and again.visual.cached == first[0]
    # A changed picture is a new hash: only it is encoded; a deleted one is left out and reported.
    catalogue = pq.read_table(cfg.catalogue)
    changed, deleted = catalogue.column("image")[0].as_py(), catalogue.column("image")[1].as_py()
    shutil.copy(cfg.catalogue.parent / deleted, cfg.catalogue.parent / changed)
    (cfg.catalogue.parent / deleted).unlink()
    result = build.build(cfg)
    assert result.visual.encoded == 0  # the changed file now has the bytes of a known picture
    # A picture with new bytes is encoded, and only it.
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 90)).save(cfg.catalogue.parent / changed)
    assert build.build(cfg).visual.encoded == 1
    assert len(result.visual.skipped) == catalogue.column("image").to_pylist().count(deleted)
    assert "image file does not exist" in result.visual.skipped[0]
    missing = catalogue.column("product_id")[1].as_py()
    assert rows(
        cfg, "SELECT count(*) FROM itemitem WHERE algorithm = 'visual' AND related_product_id = $p", p=missing
    ) == [(0,)]


def test_the_embeddings_table_is_documented(visual_shop):
    cfg = config.load(visual_shop / "etalage.toml")
    actual = [(c[0], c[1]) for c in cached(cfg, "DESCRIBE embeddings")]
    assert rows(cfg, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'embeddings'") == [
        (0,)
    ]  # not in the warehouse
    assert documented_tables()["embeddings"] == actual


@pytest.mark.slow
def test_vectors_encoded_by_a_build_the_gate_refuses_are_kept_for_the_next(visual_shop, tmp_path):
    from PIL import Image

    cfg = copied(visual_shop, tmp_path / "shop")
    image = pq.read_table(cfg.catalogue).column("image")[0].as_py()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(cfg.catalogue.parent / image)  # new bytes: must be encoded
    before = cached(cfg, "SELECT count(*) FROM embeddings")[0][0]
    worse = cfg.source.read_text().replace("top_n = 20", "top_n = 1")  # llr's MRR@20 falls far below live
    cfg.source.write_text(worse)
    refused = run_cli("build", "--config", str(cfg.source))
    assert refused.returncode == 6, refused.stderr
    assert "  encoding pictures: 1/1, " in refused.stderr  # not a terminal: progress as lines a log file keeps
    assert cached(cfg, "SELECT count(*) FROM embeddings")[0][0] == before + 1  # the warehouse was thrown away, not this
    again = run_cli("build", "--force", "--config", str(cfg.source))
    assert again.returncode == 0 and "0 encoded" in again.stderr


@pytest.mark.slow
def test_a_broken_picture_is_left_out_and_named_by_the_build(visual_shop, tmp_path):
    cfg = copied(visual_shop, tmp_path / "shop")
    image = pq.read_table(cfg.catalogue).column("image")[0].as_py()
    picture = cfg.catalogue.parent / image
    picture.write_bytes(picture.read_bytes()[:40])  # truncated PNG: a new hash, so it is encoded, and fails
    done = run_cli("build", "--config", str(cfg.source))
    assert done.returncode == 0, done.stderr
    assert "0 encoded, 1 unreadable and left out" in done.stderr
    assert f"left out: {picture}" in done.stderr


@pytest.mark.slow
def test_visual_without_pictures_is_a_clear_error_and_changes_nothing(visual_shop, tmp_path):
    cfg = copied(visual_shop, tmp_path / "shop")
    catalogue = pq.read_table(cfg.catalogue)
    pq.write_table(catalogue.drop_columns(["image"]), cfg.catalogue)
    live = snapshot.live(cfg.snapshots.root).build_id
    before = cfg.warehouse.read_bytes()
    done = run_cli("build", "--config", str(cfg.source))
    assert done.returncode == 3
    assert "no product in" in done.stderr and "names a picture in its `image` column" in done.stderr
    assert cfg.warehouse.read_bytes() == before and snapshot.live(cfg.snapshots.root).build_id == live


def test_a_damaged_index_file_fails_verification(visual_shop, tmp_path):
    cfg = copied(visual_shop, tmp_path / "shop")
    live = snapshot.live(cfg.snapshots.root)
    forest = next((live.path / "visual").glob("visual-*.ann"))
    data = bytearray(forest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    forest.write_bytes(bytes(data))
    with pytest.raises(snapshot.SnapshotInvalid, match="sha256"):
        snapshot.verify(live.path)


def test_a_visual_algorithm_needs_the_visual_stage(tmp_path):
    base = config.example_toml().replace('gate_algorithm = "auto"', 'gate_algorithm = "visual_blend"')
    assert 'gate_algorithm = "visual_blend"' in base
    with pytest.raises(config.ConfigError, match=r"snapshots\.gate_algorithm is 'visual_blend'.*enabled = true"):
        config.parse(tomllib.loads(base), tmp_path)
    variant = config.example_toml().replace('algorithm = "cooccurrence"', 'algorithm = "visual"')
    with pytest.raises(config.ConfigError, match=r"experiment.variants\[1\].algorithm is 'visual'"):
        config.parse(tomllib.loads(variant), tmp_path)
    assert config.parse(tomllib.loads(config.example_toml(visual=True)), tmp_path).visual.enabled


def test_the_snapshot_reader_serves_visual_lists_in_order(visual_shop):
    from server.reader import ServedSnapshot

    cfg = config.load(visual_shop / "etalage.toml")
    served = ServedSnapshot(snapshot.live(cfg.snapshots.root).path)
    assert {"visual", "visual_blend"} <= served.algorithms and served.visual is not None
    tenant, product = rows(cfg, "SELECT tenant, product_id FROM itemitem WHERE algorithm = 'visual_blend' LIMIT 1")[0]
    expected = rows(
        cfg,
        """
        SELECT related_product_id, rank FROM itemitem
        WHERE algorithm = 'visual_blend' AND tenant = $t AND product_id = $p ORDER BY rank
    """,
        t=tenant,
        p=product,
    )
    got = served.recommendations(tenant, "visual_blend", product, 100)
    assert [(r.product_id, r.rank) for r in got] == expected


def test_a_tenant_without_pictures_gets_404s_not_500s(visual_shop, tmp_path):
    from litestar.testing import TestClient
    from PIL import Image

    from server.app import create_app

    cfg = copied(visual_shop, tmp_path / "shop")
    catalogue = pq.read_table(cfg.catalogue)
    keep = [
        None if tenant == "de" else image
        for tenant, image in zip(
            catalogue.column("tenant").to_pylist(), catalogue.column("image").to_pylist(), strict=True
        )
    ]
    pq.write_table(
        catalogue.set_column(catalogue.column_names.index("image"), "image", pa.array(keep, pa.string())), cfg.catalogue
    )
    build.build(cfg, force=True)
    product = catalogue.filter(pa.compute.equal(catalogue.column("tenant"), "de")).column("product_id")[0].as_py()
    with TestClient(create_app(cfg)) as client:
        photo = io.BytesIO()
        Image.new("RGB", (32, 32), "green").save(photo, "PNG")
        for answer in (
            client.post("/v1/de/images/similar", content=photo.getvalue()),
            client.get(f"/v1/de/products/{product}/visually-similar"),
        ):
            assert answer.status_code == 404, answer.text
            assert "tenant 'de' has no pictures in the visual index" in answer.json()["detail"]
        assert client.get(f"/v1/de/products/{product}/recommendations").status_code == 200


def test_progress_in_a_log_file_is_a_line_every_few_seconds_and_one_at_each_end(capsys):
    from engine.cli import LogLines

    every_call, rarely = LogLines("encoding pictures", every=0), LogLines("encoding pictures", every=3600)
    for progress in (every_call, rarely):
        for done in (32, 64, 96, 100):
            progress(done, 100)
        progress(3, 10, "linking look-alikes")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        *(f"  encoding pictures: {done}/100" for done in (32, 64, 96, 100)),
        "  linking look-alikes: 3/10",
        "  encoding pictures: 100/100",  # the other one: only where a phase ends
    ]
    assert all(line.split(", ")[1].endswith("/s") for line in lines)
