"""A full disk is exit code 8 with the path it could not write, and changes nothing: on a real, small tmpfs, filled up."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import divolte_events, run_cli, sha256, write_shop_folder

EXIT_DISK_FULL = 8


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int = 32) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` mounted at ``folder`` for the block (mounting needs root, as the tests run here)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a real full disk needs a small tmpfs, and mounting one failed: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write zeros into ``folder``'s file system until it has no space left; return the file that holds them."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(1 << 20))
        except OSError as error:
            if error.errno != errno.ENOSPC:  # only a full disk is what the test wants
                raise
        with contextlib.suppress(OSError):
            while True:
                handle.write(bytes(4096))  # the last pages
    return filler


def tiny_shop(folder: Path, snapshots: Path | None = None) -> Path:
    events = divolte_events([{"session": f"s{i % 7}", "product": f"100000{i % 5}"} for i in range(60)])
    config = write_shop_folder(folder, events, {"nl": [f"100000{i}" for i in range(5)]})
    if snapshots:
        config.write_text(config.read_text() + f'[snapshots]\nroot = "{snapshots}"\n')
    return config


def state(shop: Path, snapshots: Path) -> dict:
    """What a failed command must leave as it was: the warehouse's bytes and every snapshot entry."""
    return {
        "warehouse": sha256(shop / "warehouse.duckdb"),
        "current": (snapshots / "current").readlink(),
        "entries": sorted(p.name for p in snapshots.iterdir()),
        "shop": sorted(p.name for p in shop.iterdir()),
    }


@pytest.mark.slow
@pytest.mark.parametrize("full", ["warehouse", "snapshots"])
def test_a_build_on_a_full_disk_is_exit_8_naming_the_path_and_changes_nothing(tmp_path, full):
    with small_disk(tmp_path / "disk") as disk:
        shop = disk / "shop" if full == "warehouse" else tmp_path / "shop"
        shop.mkdir()
        snapshots = disk / "snapshots" if full == "snapshots" else shop / "snapshots"
        config = tiny_shop(shop, snapshots if full == "snapshots" else None)
        assert run_cli("build", "--config", str(config)).returncode == 0
        before = state(shop, snapshots)
        filler = fill(disk)

        result = run_cli("build", "--config", str(config))
        assert result.returncode == EXIT_DISK_FULL, result.stderr
        assert "No space left on device while writing" in result.stderr and "Traceback" not in result.stderr
        named = result.stderr.split("while writing ", 1)[1].split(";")[0]
        assert Path(named).is_relative_to(disk), named
        assert state(shop, snapshots) == before

        filler.unlink()
        assert run_cli("build", "--config", str(config)).returncode == 0


@pytest.mark.slow
def test_an_export_to_a_full_disk_is_exit_8_and_leaves_no_partial_file(tmp_path):
    shop = tmp_path / "shop"
    shop.mkdir()
    config = tiny_shop(shop)
    assert run_cli("build", "--config", str(config)).returncode == 0
    with small_disk(tmp_path / "disk", megabytes=1) as disk:
        earlier = disk / "counts.csv"
        earlier.write_text("an export from yesterday\n")
        fill(disk)
        query = "SELECT * FROM range(100000)"
        result = run_cli("sql", query, "--config", str(config), "--format", "csv", "--output", str(earlier))
        assert result.returncode == EXIT_DISK_FULL, result.stderr
        assert f"No space left on device while writing {earlier}" in result.stderr
        assert earlier.read_text() == "an export from yesterday\n"
        assert sorted(p.name for p in disk.iterdir()) == ["counts.csv", "filler"]
