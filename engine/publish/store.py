"""The store: the warehouse's large data files, written once beside it and read through its views.

A warehouse is replaced whole by every build (``engine.publish.warehouse``),
so what grows with the clickstream cannot live inside it without being
copied every hour. Those tables live here instead, as files that are never
changed once written: the events of each build (Parquet), each build's
``itemitem`` rows (Parquet), the pair counts (NumPy arrays), and the
catalogue as it was (Parquet, written again only when it changed). The
warehouse's state names the ones it uses by their paths from its own
folder, so a warehouse and its store can move together; its views read
them by absolute paths (written by each build), so that a warehouse
attached from anywhere reads them.

A build writes its new files under names no other build uses (its build id)
before the new warehouse replaces the old one; a build that dies leaves only
files no warehouse names, which :meth:`Store.collect` removes later.
Files stay as long as one of the last few warehouses names them, so an
analyst who still has an older warehouse open keeps reading it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

KINDS = ("events", "catalogue", "itemitem", "pairs", "lists", "evaluation")
"""The store's folders: one per kind of file."""


class Store:
    """The store folder of one warehouse: ``warehouse.duckdb``'s is ``warehouse.store/`` beside it."""

    def __init__(self, warehouse: Path) -> None:
        self.folder = warehouse.parent
        self.root = warehouse.with_suffix(".store")

    def new(self, kind: str, name: str) -> Path:
        """A path for a new file (or folder) of ``kind``; nothing is there yet, and nothing refers to it."""
        if kind not in KINDS:
            msg = f"no store folder {kind!r} (known: {', '.join(KINDS)})"
            raise ValueError(msg)
        path = self.root / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()  # left by a build that died before naming it
        return path

    def relative(self, path: Path) -> str:
        """How the warehouse names a store file: its path from the warehouse's folder."""
        return os.path.relpath(path, self.folder)

    def absolute(self, relative: str) -> Path:
        return self.folder / relative

    def paths(self, names: list[str]) -> list[str]:
        """The absolute paths of store files the warehouse names, as its views read them."""
        return [str(self.absolute(name).resolve()) for name in names]

    def collect(self, named: set[str]) -> list[str]:
        """Remove every store file or folder that ``named`` (relative paths, as the warehouse names them) lacks."""
        removed = []
        for kind in KINDS:
            for path in sorted((self.root / kind).glob("*")) if (self.root / kind).is_dir() else []:
                if self.relative(path) not in named:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                    removed.append(self.relative(path))
        return removed
