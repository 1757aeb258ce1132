"""Catalog-level faults found by the kill cycles (in-process: real DuckDB and Parquet files).

A daemon SIGKILLed in the middle of a publication leaves what it had made so far: a generation
directory ``exports/gen/<N+1>`` that ``current`` never pointed at (made ahead or half made),
hidden temp names (``.bus.duckdb.qbpub-*``, ``.current.qbpub-*``, ``gen/<N+1>/*.qbpub-sparse``)
and store files no manifest names (the new catalog segments in
``.store/catalog/``, a new export file in ``.store/files/``; as big as the rows they hold).
The next process has another pid and never knew those names: unless opening the publication
removes them, every such kill leaks them for good. Opening must remove exactly those, and leave
the current generation, which readers may be reading, untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from builders import live_run_ids, make_run

from quantbot_bus import pipeline
from quantbot_bus.config import Config
from quantbot_bus.publication import Publication, current_generation


def _tree(d: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry below ``d`` with its inode, size and mtime (symlinks not followed)."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(d))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _qbpub_names(exports: Path) -> list[Path]:
    return [p for p in exports.rglob("*") if ".qbpub-" in p.name]


@pytest.mark.parametrize("opener", ["bus", "publication"])
def test_leftovers_of_a_killed_publication_are_removed_when_the_next_one_opens(
    bus: Config, opener: str
) -> None:
    make_run(bus.root, "backtest", "run-1")
    pipeline.sync(bus)
    exports = Path(bus.exports_dir)
    assert not _qbpub_names(exports), "a publication that finished left temp names"

    gen = current_generation(exports)
    n = int(gen.name)
    manifest = json.loads((gen / "manifest.json").read_text())
    current_link = os.readlink(exports / "current")
    views_ino = (exports / "bus.duckdb").stat().st_ino
    before = _tree(gen)
    store = exports / ".store"
    named = [
        store / "catalog" / t / s["name"] for t, segs in manifest["catalog"].items() for s in segs
    ]
    named += [store / "files" / f for f in manifest["files"].values()]
    assert named and all(p.is_file() for p in named)

    # --- what a publication SIGKILLed before its swap leaves behind
    runs_seg = store / "catalog" / "runs_d" / manifest["catalog"]["runs_d"][0]["name"]
    orphan_seg = store / "catalog" / "runs_d" / f"{n:012d}-{n + 1:012d}-deadbeef.parquet"
    shutil.copyfile(runs_seg, orphan_seg)  # a new segment, not in any manifest
    orphan_file = store / "files" / "runs.0123456789ab.parquet"
    shutil.copyfile(gen / "files" / "runs.parquet", orphan_file)
    half_gen = exports / "gen" / f"{n + 1:010d}"  # made (ahead), never made current
    (half_gen / "catalog" / "runs_d").mkdir(parents=True, exist_ok=True)
    os.link(orphan_seg, half_gen / "catalog" / "runs_d" / orphan_seg.name)
    (half_gen / "manifest.json").write_text(json.dumps({**manifest, "gen": n + 1}))
    temps = [
        exports / ".bus.duckdb.qbpub-deadbeef",
        exports / ".current.qbpub-deadbeef",
        half_gen / "bus.duckdb.qbpub-sparse",
    ]
    os.link(gen / "bus.duckdb", temps[0])
    os.symlink(f"gen/{half_gen.name}", temps[1])
    temps[2].write_bytes(b"\0" * 4096)  # a views file half rewritten
    unrelated = [exports / ".something-else.tmp", exports / "notes.txt"]
    for p in unrelated:
        p.write_bytes(b"x")

    # --- the next process opens the publication
    if opener == "bus":
        pipeline.Bus.open(bus, role="sync").close()
    else:
        Publication(exports).close()

    assert not half_gen.exists()
    assert not orphan_seg.exists() and not orphan_file.exists()
    assert not [t for t in temps if os.path.lexists(t)]
    assert not _qbpub_names(exports)
    assert all(p.exists() for p in unrelated), "only the publication's own names go"
    # the current generation, what readers see, is untouched
    assert os.readlink(exports / "current") == current_link
    assert (exports / "bus.duckdb").stat().st_ino == views_ino
    assert _tree(gen) == before
    assert all(p.is_file() for p in named)
    assert live_run_ids(bus) == {"run-1"}

    # the next publication takes generation n+1 and readers see it whole
    make_run(bus.root, "backtest", "run-2")
    pipeline.sync(bus)
    assert int(current_generation(exports).name) > n
    assert json.loads((half_gen / "manifest.json").read_text())["gen"] == n + 1
    assert orphan_seg.name not in os.listdir(half_gen / "catalog" / "runs_d")
    assert live_run_ids(bus) == {"run-1", "run-2"}
    assert not _qbpub_names(exports)
