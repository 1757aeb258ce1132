"""The run-directory contract, table-driven over real run directories and real Parquet: artifact
files rejected (Invalid): broken Parquet, declared sizes/rows/hashes that differ, unsafe file paths
and symbolic links."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from builders import Mutator, artifact_entry, assert_invalid, make_run, set_field, write_parquet

from quantbot_bus.contract import METADATA_NAME, Valid, validate_run_dir

# --------------------------------------------------------------------------- Invalid: Parquet


def _overwrite_same_size(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    size = path.stat().st_size
    data = path.read_bytes()[: size // 2]
    path.write_bytes(data + b"\0" * (size - len(data)))  # truncated, then padded to full size


def _corrupt_footer(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    data = bytearray(path.read_bytes())
    footer_len = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_len
    data[start : start + footer_len] = b"\xff" * footer_len
    path.write_bytes(bytes(data))


def _huge_footer_length(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    data = bytearray(path.read_bytes())
    data[-8:-4] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def _csv_instead(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    text = b"a,b\n1,2\n"
    path.write_bytes(text)
    meta["artifacts"][0].update(bytes=len(text), sha256=hashlib.sha256(text).hexdigest())


def _rows(n: int) -> Mutator:
    def set_rows(meta: dict[str, Any], _: Path) -> None:
        meta["artifacts"][0]["rows"] = n

    return set_rows


def _bytes_smaller(meta: dict[str, Any], _: Path) -> None:
    meta["artifacts"][0]["bytes"] -= 1


def _sha_wrong(meta: dict[str, Any], _: Path) -> None:
    meta["artifacts"][0]["sha256"] = hashlib.sha256(b"something else").hexdigest()


def _flip_data_byte(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # inside a data page: footer still fine, size unchanged, hash differs
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        pytest.param(
            _overwrite_same_size,
            ["is not a Parquet file", "PAR1", "full declared size"],
            id="truncated-full-size",
        ),
        pytest.param(_corrupt_footer, ["Parquet footer cannot be read"], id="corrupt-footer"),
        pytest.param(_huge_footer_length, ["Parquet footer is damaged"], id="footer-length"),
        pytest.param(_csv_instead, ["is not a Parquet file"], id="csv-not-parquet"),
        pytest.param(
            _rows(4),
            ["has 3 rows in its Parquet footer but metadata.json declares 4"],
            id="rows-mismatch",
        ),
        pytest.param(_bytes_smaller, ["bytes but metadata.json declares"], id="bytes-mismatch"),
        pytest.param(_sha_wrong, ["sha256", "but metadata.json declares"], id="sha256-mismatch"),
        pytest.param(_flip_data_byte, ["sha256"], id="sha256-file-changed"),
    ],
)
def test_parquet_problems_are_invalid(root: Path, mutate: Mutator, needles: list[str]) -> None:
    result = assert_invalid(validate_run_dir(make_run(root, mutate=mutate), root), *needles)
    assert "artifact 'results' (file 'results.parquet')" in result.reason
    assert result.run_id == "run-1"


# --------------------------------------------------------------------------- mixed answers


def test_invalid_artifact_wins_over_incomplete_one(root: Path) -> None:
    def mixed(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "results.parquet").unlink()  # not there yet: alone, this is Incomplete
        (run_dir / "calls.parquet").symlink_to("/etc/passwd")  # but this one is hostile
        meta["artifacts"].append({"name": "calls", "file": "calls.parquet", "format": "parquet"})

    assert_invalid(validate_run_dir(make_run(root, mutate=mixed), root), "artifact 'calls'")


# --------------------------------------------------------------------------- file paths


@pytest.mark.parametrize(
    ("file", "needle"),
    [
        ("../run-2/results.parquet", "contains '..'"),
        ("../../../../../../etc/passwd", "contains '..'"),
        ("sub/../results.parquet", "contains '..'"),
        ("/etc/passwd", "is an absolute path"),
        ("//etc/passwd", "is an absolute path"),
        (".results.parquet", "hidden"),
        ("sub/.cache/results.parquet", "hidden"),
        ("results.parquet.tmp", ".tmp/.partial"),
        ("results.parquet.partial", ".tmp/.partial"),
        ("work.tmp/results.parquet", ".tmp/.partial"),
        ("./results.parquet", "'.' component"),
        ("sub//results.parquet", "empty or '.' component"),
        ("results.parquet/", "empty or '.' component"),
        ("sub\\results.parquet", "backslash"),
        ("results\x00.parquet", "NUL"),
        ("metadata.json", "is metadata.json itself"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_bad_file_paths(root: Path, file: str, needle: str) -> None:
    result = validate_run_dir(make_run(root, mutate=set_field("artifacts.0.file", file)), root)
    assert_invalid(result, "artifact 'results'", "the file path", needle)


def test_symlink_escaping_root_to_etc_passwd(root: Path) -> None:
    def link(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "passwd.parquet").symlink_to("/etc/passwd")
        meta["artifacts"][0].update(file="passwd.parquet", bytes=None, sha256=None, rows=None)

    assert_invalid(
        validate_run_dir(make_run(root, mutate=link), root),
        "resolves to '/etc/passwd', outside the artifacts root",
        "copy the file into the run directory",
    )


def test_symlink_to_real_parquet_outside_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "t.parquet"
    write_parquet(outside)

    def link(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "results.parquet").unlink()
        (run_dir / "results.parquet").symlink_to(outside)

    assert_invalid(
        validate_run_dir(make_run(root, mutate=link), root), "outside the artifacts root"
    )


def test_symlinked_directory_component_escaping_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    data = write_parquet(outside / "t.parquet")

    def link(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "sub").symlink_to(outside, target_is_directory=True)
        meta["artifacts"][0] = artifact_entry("sub/t.parquet", data, 3, name="results")

    assert_invalid(
        validate_run_dir(make_run(root, mutate=link), root), "outside the artifacts root"
    )


def test_symlink_inside_root_is_tolerated(root: Path) -> None:
    shared = root / "shared" / "calls.parquet"
    data = write_parquet(shared, 4)

    def link(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "calls.parquet").symlink_to(shared)
        meta["artifacts"].append(artifact_entry("calls.parquet", data, 4))

    run_dir = make_run(root, mutate=link)
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    calls = result.run.artifacts[1]
    assert calls.path == run_dir / "calls.parquet"
    assert (calls.rows, calls.bytes) == (4, len(data))


def test_metadata_json_symlink_out_of_root(root: Path, tmp_path: Path) -> None:
    run_dir = make_run(root)
    outside = tmp_path / "meta.json"
    outside.write_text((run_dir / METADATA_NAME).read_text())
    (run_dir / METADATA_NAME).unlink()
    (run_dir / METADATA_NAME).symlink_to(outside)
    assert_invalid(
        validate_run_dir(run_dir, root), "metadata.json is a symbolic link leading outside"
    )


def test_run_dir_outside_root(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run_dir = make_run(other)
    assert_invalid(validate_run_dir(run_dir, root), "is not a directory below the artifacts root")
    assert_invalid(validate_run_dir(root, root), "is not a directory below the artifacts root")


def test_run_dir_that_is_a_symlink(root: Path) -> None:
    run_dir = make_run(root)
    link = root / "backtest" / "run-2"
    link.symlink_to(run_dir, target_is_directory=True)
    assert_invalid(validate_run_dir(link, root), "the run directory is a symbolic link")


def test_artifact_that_is_a_directory(root: Path) -> None:
    def make_dir(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "results.parquet").unlink()
        (run_dir / "results.parquet").mkdir()

    assert_invalid(
        validate_run_dir(make_run(root, mutate=make_dir), root), "is a directory, not a regular"
    )
