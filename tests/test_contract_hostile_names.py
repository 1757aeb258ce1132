"""Hostile names in the artifacts root (issue 7): file and run directory names that are not
valid UTF-8, one run_id under two run types, and the scan finding a TypeScript producer's run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from builders import assert_invalid, make_run, make_ts_run

from quantbot_bus.contract import Valid, iter_run_dirs, quick_fingerprint, validate_run_dir


def test_non_utf8_file_name_in_run_dir_is_ignored(root: Path) -> None:
    def stray(meta: dict[str, Any], run_dir: Path) -> None:
        with open(os.fsencode(run_dir) + b"/\xff\xfe-stray.parquet", "wb") as f:
            f.write(b"junk")

    run_dir = make_run(root, mutate=stray)
    assert isinstance(validate_run_dir(run_dir, root), Valid)
    assert quick_fingerprint(run_dir) is not None


def test_non_utf8_file_name_listed(root: Path) -> None:
    def listed(meta: dict[str, Any], run_dir: Path) -> None:
        name = os.fsdecode(b"\xff.parquet")  # '\udcff.parquet' once decoded
        os.rename(run_dir / "results.parquet", run_dir / name)
        meta["artifacts"][0]["file"] = name

    run_dir = make_run(root, mutate=listed)
    assert_invalid(validate_run_dir(run_dir, root), "lone surrogate", "artifacts[0].file")


@pytest.mark.parametrize("parent", [b"backtest", b"back\xfftest"])
def test_non_utf8_run_directory_name(root: Path, tmp_path: Path, parent: bytes) -> None:
    good = make_run(tmp_path / "staging")
    run_id = "run-1" if b"\xff" in parent else "run-\udcff"
    bad = Path(os.fsdecode(os.fsencode(root) + b"/" + parent + b"/" + os.fsencode(run_id)))
    bad.parent.mkdir(parents=True)
    os.rename(good, bad)  # pyarrow itself cannot write to such a path
    assert list(iter_run_dirs(root)) == [bad]
    result = assert_invalid(validate_run_dir(bad, root), "is not valid UTF-8; rename it")
    assert "\\udcff" in result.reason or "\\xff" in result.reason


def test_duplicated_run_id_under_two_run_types(root: Path) -> None:
    # each directory is valid on its own; refusing the second one is the catalog's job
    a = make_run(root, "backtest", "dup-1")
    b = make_run(root, "optimize", "dup-1")
    ra, rb = validate_run_dir(a, root), validate_run_dir(b, root)
    assert isinstance(ra, Valid) and isinstance(rb, Valid)
    assert ra.run.run_id == rb.run.run_id and ra.run.run_dir != rb.run.run_dir


def test_typescript_run_is_found_by_scan(root: Path) -> None:
    run_dir = make_ts_run(root)
    assert list(iter_run_dirs(root)) == [run_dir]
