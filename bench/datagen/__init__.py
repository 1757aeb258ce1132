"""Fast scenario data: write each distinct Parquet file once, hard-link it into many run dirs.

A *template* is a small set of Parquet files with the seed system's backtest column names
(``backtest_call_path_metrics``, ``backtest_policy_results``, ``backtest_call_results``), written
once per *variant* (different seeds, so summaries are not all identical) with their rows, bytes
and sha256 computed once. :func:`make_runs` then creates ``root/backtest/<run_id>/`` for each run
by ``os.link``-ing the variant's files and writing a v1 ``metadata.json`` (temp file + rename), so
10,000 runs take a few seconds. Two run shapes alternate:

- ``path-only``: ``backtest_call_path_metrics.parquet`` + ``backtest_call_results.parquet``;
- ``policy``: those two + ``backtest_policy_results.parquet`` (3 files).

Caveat (documented in bench/README.md): the ``run_id`` column *inside* a hard-linked Parquet file
is the template's, not the run's; everything the bus reads from metadata.json (run_id, params,
metrics, artifacts) is per run.

ext4 allows at most 65,000 links to one inode: when ``os.link`` fails with ``EMLINK`` the file is
copied once (same bytes, same sha256) and linking continues to the copy.

Modules: this one (the template: :func:`make_template`, :class:`Template`), :mod:`.tables` (the
synthetic tables), :mod:`.runs` (run dirs and their metadata.json), :mod:`.preseed` (a catalog
pre-seeded with them).
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from .preseed import preseed_catalog
from .runs import (
    RUN_TYPE,
    iter_run_dirs,
    make_run,
    make_runs,
    metadata_for,
    metadata_text,
    run_id_for,
    write_json_atomic,
)
from .tables import (
    BASE_TS_MS,
    BUILDERS,
    CALLERS,
    ROWS_PER_TABLE,
    SHAPES,
    TABLES_BY_SHAPE,
    _call_results,
    _policy_results,
)

__all__ = [
    "BASE_TS_MS",
    "CALLERS",
    "LINKS_PER_FILE",
    "ROWS_PER_TABLE",
    "RUN_TYPE",
    "SHAPES",
    "TABLES_BY_SHAPE",
    "Template",
    "TemplateFile",
    "Variant",
    "_call_results",
    "_policy_results",
    "iter_run_dirs",
    "make_run",
    "make_runs",
    "make_template",
    "metadata_for",
    "metadata_text",
    "preseed_catalog",
    "run_id_for",
    "write_json_atomic",
]

#: Hard links per template file before :meth:`Template.link` copies it (read at each link, so a
#: test may lower it on this package).
LINKS_PER_FILE = 30_000  # stay well below ext4's 65,000 hard links per inode


@dataclass
class TemplateFile:
    """One Parquet file of a variant, written once, with its rows, bytes and sha256."""

    name: str  # table name
    path: Path  # current link source (may move to a copy after EMLINK)
    rows: int
    bytes: int
    sha256: str
    links: int = 0


@dataclass
class Variant:
    """One set of template files of a run shape, and the run metrics its runs declare."""

    shape: str  # "path-only" | "policy"
    seed: int
    files: list[TemplateFile]
    metrics: dict[str, float]


@dataclass
class Template:
    """The variants under ``directory``; run ``i`` is made from variant ``i % len(variants)``."""

    directory: Path
    variants: list[Variant] = field(default_factory=list)
    _copies: int = 0

    def variant_for(self, i: int) -> Variant:
        return self.variants[i % len(self.variants)]

    def link(self, tf: TemplateFile, dest: Path) -> None:
        """Hard-link ``tf`` to ``dest``; on EMLINK (or a full inode) copy it once and carry on."""
        if tf.links >= LINKS_PER_FILE:
            self._fresh_copy(tf)
        try:
            os.link(tf.path, dest)
        except OSError as exc:
            if exc.errno != errno.EMLINK:
                raise
            self._fresh_copy(tf)
            os.link(tf.path, dest)
        tf.links += 1

    def _fresh_copy(self, tf: TemplateFile) -> None:
        self._copies += 1
        copy = tf.path.with_name(f"{tf.path.stem}.c{self._copies}{tf.path.suffix}")
        shutil.copyfile(tf.path, copy)
        tf.path = copy
        tf.links = 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_template(directory: Path, *, variants: int = 8, rows: int = ROWS_PER_TABLE) -> Template:
    """Write ``variants`` sets of Parquet files (alternating shapes) under ``directory``.

    ``directory`` must be on the same filesystem as the run roots (hard links).
    """
    directory.mkdir(parents=True, exist_ok=True)
    tpl = Template(directory)
    for v in range(variants):
        shape = SHAPES[v % len(SHAPES)]
        rng = random.Random(1_000 + v)
        files: list[TemplateFile] = []
        pnl = 0.0
        for name in TABLES_BY_SHAPE[shape]:
            table = BUILDERS[name](rng, rows, f"template-{v}")
            path = directory / f"v{v}-{name}.parquet"
            pq.write_table(table, path, compression="zstd")
            if name == "backtest_call_results":
                pnl = float(sum(table.column("pnl_usd").to_pylist()))
            files.append(
                TemplateFile(name, path, table.num_rows, path.stat().st_size, _sha256(path))
            )
        metrics: dict[str, float] = {"calls": float(rows), "total_pnl_usd": round(pnl, 4)}
        if shape == "path-only":
            metrics.update(hit_2x_rate=round(rng.uniform(0.1, 0.4), 4), callers=len(CALLERS))
        else:
            metrics.update(
                trades=float(rows),
                avg_return_bps=round(rng.uniform(-50, 80), 3),
                stop_out_rate=round(rng.uniform(0.1, 0.5), 4),
                best_policy_win_rate=round(rng.uniform(0.3, 0.6), 4),
            )
        tpl.variants.append(Variant(shape, 1_000 + v, files, metrics))
    return tpl
