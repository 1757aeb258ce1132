"""The run-directory contract, table-driven over real run directories and real Parquet: finding run
directories under the root (``walk_run_dirs``, ``iter_run_dirs``) and which paths are ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantbot_bus.contract import METADATA_NAME, iter_run_dir_paths, iter_run_dirs, walk_run_dirs
from quantbot_bus.ignore import is_ignored

# --------------------------------------------------------------------------- iter_run_dirs


def test_walk_run_dirs_gives_paths_and_metadata_lstat(root: Path) -> None:
    made = [_meta(root / "backtest" / f"r{i}") for i in range(3)]
    walked = list(walk_run_dirs(root))
    assert [p for p, _ in walked] == [str(d) for d in made] == list(iter_run_dir_paths(root))
    assert list(iter_run_dirs(root)) == made
    for path, st in walked:
        assert st == os.lstat(os.path.join(path, METADATA_NAME))


def _meta(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / METADATA_NAME).write_text("{}")
    return d


def test_iter_run_dirs_layout(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {
        _meta(root / "backtest" / "r1"),
        _meta(root / "backtest" / "r2"),
        _meta(root / "nested" / "a" / "b" / "r3"),
        _meta(root / "optimize" / "r4"),
    }
    _meta(root / "backtest" / "r1" / "sub" / "inner")  # inside a run dir: not descended into
    _meta(root / ".hidden" / "r5")
    _meta(root / "backtest" / ".r6")
    _meta(root / "backtest" / "r7.partial")
    _meta(root / "backtest" / "r8.tmp")
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "file.txt").write_text("not a dir")
    (root / "backtest" / "r9").mkdir()
    (root / "backtest" / "r9" / METADATA_NAME).mkdir()  # broken, but a run dir: validator says why
    expected.add(root / "backtest" / "r9")
    (root / "loop").symlink_to(root / "nested", target_is_directory=True)  # not followed
    outside_run = _meta(tmp_path / "outside" / "r10")
    (root / "ext").symlink_to(outside_run.parent, target_is_directory=True)
    (root / "extrun").symlink_to(outside_run, target_is_directory=True)

    found = list(iter_run_dirs(root))
    assert len(found) == len(set(found))
    assert set(found) == expected
    assert all(p.is_absolute() for p in found)

    monkeypatch.chdir(tmp_path)
    assert set(iter_run_dirs(Path("artifacts"))) == expected  # absolute even from a relative root


def test_iter_run_dirs_empty_and_missing_root(root: Path) -> None:
    assert list(iter_run_dirs(root)) == []
    assert list(iter_run_dirs(root / "missing")) == []
    _meta(root)  # the root itself is never a run dir
    assert list(iter_run_dirs(root)) == []


def test_iter_run_dirs_finds_every_run_once(root: Path) -> None:
    made = {_meta(root / f"type{i % 3}" / f"run{i:04d}") for i in range(300)}
    found = list(iter_run_dirs(root))
    assert len(found) == 300 and set(found) == made


# --------------------------------------------------------------------------- is_ignored


@pytest.mark.parametrize(
    ("rel", "ignored"),
    [
        ("backtest/run-1", False),
        ("backtest/run-1/metadata.json", False),
        ("backtest/run-1/results.parquet", False),
        ("", False),
        (".staging/run-1", True),
        ("backtest/.run-1/metadata.json", True),
        ("backtest/run-1/.metadata.json.swp", True),
        ("backtest/run-1/metadata.json.tmp", True),
        ("backtest/run-1/results.parquet.partial", True),
        ("backtest/run-1.partial/metadata.json", True),
        ("backtest/run-1/x.tmp/results.parquet", True),
        ("backtest/run.tmpfoo", False),
        ("../elsewhere/run", True),
    ],
)
def test_is_ignored(root: Path, rel: str, ignored: bool) -> None:
    assert is_ignored(root, root / rel if rel else root) is ignored


def test_is_ignored_outside_and_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "backtest").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert is_ignored(real, Path("/etc/passwd"))
    assert is_ignored(real, tmp_path / "realx" / "run")
    assert not is_ignored(link, real / "backtest")  # same place, reached through the symlink
    assert is_ignored(link, real / "backtest" / ".tmpdir")
