"""Hostile artifact files (issue 7): a FIFO, socket or device named ``*.parquet``, symlinks to
system files or in a loop, too many artifacts, and Parquet footers claiming a billion rows
(compared with the declaration, never read); the validator answers, never raises or hangs."""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from builders import assert_invalid, crafted_parquet, make_run

from quantbot_bus.contract import Valid, validate_run_dir


def _replace_file(run_dir: Path, name: str = "results.parquet") -> Path:
    path = run_dir / name
    path.unlink()
    return path


def test_fifo_named_parquet_does_not_hang(root: Path) -> None:
    def fifo(meta: dict[str, Any], run_dir: Path) -> None:
        os.mkfifo(_replace_file(run_dir))
        meta["artifacts"][0].update(bytes=None, sha256=None)

    assert_invalid(
        validate_run_dir(make_run(root, mutate=fifo), root),
        "artifact 'results' (file 'results.parquet') is a FIFO (named pipe), not a regular",
    )


def test_socket_named_parquet(root: Path) -> None:
    # AF_UNIX paths are limited to ~108 bytes: bind in a short temp dir, then move the socket in
    short = Path(tempfile.mkdtemp(prefix="qb"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(short / "s"))

        def sockfile(meta: dict[str, Any], run_dir: Path) -> None:
            os.rename(short / "s", _replace_file(run_dir))

        result = validate_run_dir(make_run(root, mutate=sockfile), root)
        assert_invalid(result, "is a socket, not a regular")
    finally:
        sock.close()
        os.rmdir(short)


def test_device_file_named_parquet(root: Path) -> None:
    def device(meta: dict[str, Any], run_dir: Path) -> None:
        os.mknod(_replace_file(run_dir), 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero

    try:
        run_dir = make_run(root, mutate=device)
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD (not running as root)")
    assert_invalid(validate_run_dir(run_dir, root), "is a character device, not a regular")


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/stdin", "/proc/self/mem", "/etc/passwd"])
def test_symlink_to_system_files(root: Path, target: str) -> None:
    def link(meta: dict[str, Any], run_dir: Path) -> None:
        _replace_file(run_dir).symlink_to(target)

    assert_invalid(
        validate_run_dir(make_run(root, mutate=link), root), "outside the artifacts root"
    )


def test_symlink_loop(root: Path) -> None:
    def loop(meta: dict[str, Any], run_dir: Path) -> None:
        _replace_file(run_dir).symlink_to("results.parquet")

    result = validate_run_dir(make_run(root, mutate=loop), root)
    assert_invalid(result, "artifact 'results'", "symbolic link that does not resolve")


def test_too_many_artifacts_and_long_metric_names(root: Path) -> None:
    def many(meta: dict[str, Any], _: Path) -> None:
        meta["artifacts"] = [meta["artifacts"][0]] * 10_001

    assert_invalid(
        validate_run_dir(make_run(root, mutate=many), root),
        "field 'artifacts' must be a list of artifact objects (at most 10000), "
        "got a list of 10001 items",
    )

    def long_name(meta: dict[str, Any], _: Path) -> None:
        meta["metrics"]["x" * 300] = 1

    assert_invalid(
        validate_run_dir(make_run(root, run_id="run-2", mutate=long_name), root),
        "metric names of at most 256 characters",
        "(300 characters)",
    )


def _crafted(num_rows: int, rg_rows: int | None, declared: int) -> Any:
    def craft(meta: dict[str, Any], run_dir: Path) -> None:
        data = crafted_parquet(num_rows, rg_rows)
        (run_dir / "results.parquet").write_bytes(data)
        meta["artifacts"][0].update(rows=declared, bytes=len(data), sha256=None)

    return craft


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_billion_rows_footer_compared_not_read(root: Path) -> None:
    run_dir = make_run(root, mutate=_crafted(10**9, 10**9, declared=10))
    assert (run_dir / "results.parquet").stat().st_size < 200
    before = _maxrss_mib()
    assert_invalid(
        validate_run_dir(run_dir, root),
        "has 1000000000 rows in its Parquet footer but metadata.json declares 10",
    )
    assert _maxrss_mib() - before < 100  # nothing of the size of a billion rows was allocated


def test_billion_rows_footer_matching_declaration(root: Path) -> None:
    run_dir = make_run(root, mutate=_crafted(10**9, 10**9, declared=10**9))
    before = _maxrss_mib()
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.artifacts[0].rows == 10**9
    assert json.loads(result.run.artifacts[0].arrow_schema) == [
        {"name": "x", "type": "int64", "nullable": False}
    ]
    assert _maxrss_mib() - before < 100


def test_footer_rows_disagree_with_row_groups(root: Path) -> None:
    run_dir = make_run(root, mutate=_crafted(10**9, None, declared=10**9))
    assert_invalid(
        validate_run_dir(run_dir, root),
        "Parquet footer is inconsistent: it says 1000000000 rows but its row groups hold 0",
    )
