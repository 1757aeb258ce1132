"""The run-directory contract, table-driven over real run directories and real Parquet: the run
fingerprint (``quick_fingerprint``, ``fingerprint_of``) that tells whether a run changed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from builders import artifact_entry, make_run, make_ts_run, write_parquet

from quantbot_bus.contract import (
    METADATA_NAME,
    Valid,
    fingerprint_of,
    quick_fingerprint,
    validate_run_dir,
    walk_run_dirs,
)

# --------------------------------------------------------------------------- quick_fingerprint


def test_fingerprint_none_without_metadata(root: Path) -> None:
    run_dir = root / "backtest" / "r"
    run_dir.mkdir(parents=True)
    assert quick_fingerprint(run_dir) is None
    assert quick_fingerprint(root / "does-not-exist") is None


def test_fingerprint_stable_and_sensitive(root: Path) -> None:
    run_dir = make_run(root, tables={"results": 3, "summary": 1})
    fp = quick_fingerprint(run_dir)
    assert fp is not None and fp == quick_fingerprint(run_dir)

    # an unlisted file does not matter
    (run_dir / "notes.txt").write_text("hello")
    assert quick_fingerprint(run_dir) == fp

    results = run_dir / "results.parquet"
    st = results.stat()
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched
    touched = quick_fingerprint(run_dir)
    assert touched != fp
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns))  # back: same fingerprint again
    assert quick_fingerprint(run_dir) == fp

    with results.open("ab") as f:  # resized, mtime restored: still different
        f.write(b"x")
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert quick_fingerprint(run_dir) not in (fp, touched)

    os.truncate(results, st.st_size)
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert quick_fingerprint(run_dir) == fp
    (run_dir / "summary.parquet").unlink()  # a listed file deleted
    assert quick_fingerprint(run_dir) != fp


def test_fingerprint_follows_metadata_and_unparsable_metadata(root: Path) -> None:
    run_dir = make_run(root)
    fp = quick_fingerprint(run_dir)
    meta = run_dir / METADATA_NAME
    meta.write_text("{not json")
    broken = quick_fingerprint(run_dir)
    assert broken is not None and broken != fp
    # unparsable: only metadata.json's own stat counts, so the data file no longer matters
    with (run_dir / "results.parquet").open("ab") as f:
        f.write(b"x")
    assert quick_fingerprint(run_dir) == broken


def test_fingerprint_typescript_shape_lists_parquet_file(root: Path) -> None:
    run_dir = make_ts_run(root)
    fp = quick_fingerprint(run_dir)
    with (run_dir / "results.parquet").open("ab") as f:
        f.write(b"x")
    assert quick_fingerprint(run_dir) != fp


def test_fingerprint_of_metadata_directory(root: Path) -> None:
    run_dir = root / "backtest" / "r"
    (run_dir / METADATA_NAME).mkdir(parents=True)
    assert quick_fingerprint(run_dir) is not None


def test_fingerprint_of_equals_quick_fingerprint(root: Path) -> None:
    def in_subdir(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "data").mkdir()
        data = write_parquet(run_dir / "data" / "calls.parquet", 2)
        meta["artifacts"].append(artifact_entry("data/calls.parquet", data, 2))

    # listed out of name order, one file in a subdirectory
    run_dir = make_run(root, tables={"zeta": 3, "alpha": 1}, mutate=in_subdir)
    files = ["zeta.parquet", "alpha.parquet", "data/calls.parquet"]
    fp = quick_fingerprint(run_dir)
    assert fp is not None
    assert fingerprint_of(run_dir, files) == fp
    assert fingerprint_of(str(run_dir), list(reversed(files))) == fp  # order does not matter
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid) and result.run.fingerprint == fp
    # what the catalog knows (the artifacts' paths) gives the same fingerprint
    known = [a.path.relative_to(run_dir).as_posix() for a in result.run.artifacts]
    assert fingerprint_of(run_dir, known) == fp
    # the lstat a directory walk already took gives the same answer
    (walked,) = [st for path, st in walk_run_dirs(root) if path == str(run_dir)]
    assert fingerprint_of(run_dir, files, metadata_lstat=walked) == fp

    # another file list is another fingerprint (metadata.json's stat alone is not enough)
    assert fingerprint_of(run_dir, files[:2]) != fp
    assert fingerprint_of(run_dir, [*files, "other.parquet"]) != fp
    # a listed file touched: both see it, and still agree
    alpha = run_dir / "alpha.parquet"
    st = alpha.stat()
    os.utime(alpha, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = quick_fingerprint(run_dir)
    assert touched != fp and fingerprint_of(run_dir, files) == touched
    alpha.unlink()  # a listed file deleted
    gone = quick_fingerprint(run_dir)
    assert gone not in (fp, touched) and fingerprint_of(run_dir, files) == gone
    # metadata.json rewritten (same list): its own stat changes the fingerprint
    meta = run_dir / METADATA_NAME
    meta.write_text(meta.read_text() + " ")
    assert fingerprint_of(run_dir, files) not in (fp, touched, gone)
    assert fingerprint_of(run_dir, files) == quick_fingerprint(run_dir)
    meta.unlink()
    assert fingerprint_of(run_dir, files) is None and quick_fingerprint(run_dir) is None


def test_fingerprint_of_typescript_failed_and_symlinked_metadata(root: Path) -> None:
    ts = make_ts_run(root)
    assert fingerprint_of(ts, ["results.parquet"]) == quick_fingerprint(ts)
    assert fingerprint_of(ts, []) != quick_fingerprint(ts)

    def failed(meta: dict[str, Any], _: Path) -> None:
        meta.update(status="failed", error="out of memory", artifacts=[])

    run_dir = make_run(root, run_id="failed-1", tables={}, mutate=failed)
    assert fingerprint_of(run_dir, []) == quick_fingerprint(run_dir)

    # metadata.json a symlink (inside the root): both follow it
    linked = make_run(root, run_id="linked-1")
    real = root / "elsewhere.json"
    os.replace(linked / METADATA_NAME, real)
    (linked / METADATA_NAME).symlink_to(real)
    assert fingerprint_of(linked, ["results.parquet"]) == quick_fingerprint(linked)
    result = validate_run_dir(linked, root)
    assert isinstance(result, Valid) and result.run.fingerprint == quick_fingerprint(linked)


def test_validation_fingerprint_matches_for_odd_listings(root: Path) -> None:
    """The fingerprint stored with a valid run equals quick_fingerprint even when the
    TypeScript shape carries an extra "artifacts" field (read loosely by both)."""
    run_dir = make_ts_run(root, "ts-odd", mutate=lambda m, _: m.update(artifacts=[]))
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid)
    assert result.run.fingerprint == quick_fingerprint(run_dir)
