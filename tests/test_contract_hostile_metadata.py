"""Hostile and malformed metadata.json (issue 7): a directory, oversized or sparse, nested too
deep, a FIFO, lone surrogates, numbers too long or too large; the validator answers, never raises
or hangs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from builders import assert_invalid, make_run

from quantbot_bus.contract import (
    MAX_METADATA_BYTES,
    METADATA_NAME,
    Valid,
    quick_fingerprint,
    validate_run_dir,
)


def test_metadata_json_is_a_directory(root: Path) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).unlink()
    (run_dir / METADATA_NAME).mkdir()
    assert_invalid(validate_run_dir(run_dir, root), "metadata.json is a directory")


def test_metadata_json_9_mib(root: Path) -> None:
    def pad(meta: dict[str, Any], _: Path) -> None:
        meta["params"]["padding"] = "x" * (9 * 1024 * 1024)

    run_dir = make_run(root, mutate=pad)
    size = (run_dir / METADATA_NAME).stat().st_size
    assert size > MAX_METADATA_BYTES
    assert_invalid(
        validate_run_dir(run_dir, root),
        f"metadata.json is {size} bytes, over the 8388608 byte (8 MiB) limit",
    )


def test_metadata_json_50_mb_sparse(root: Path) -> None:
    run_dir = make_run(root)
    with (run_dir / METADATA_NAME).open("r+b") as f:
        f.truncate(50 * 1000 * 1000)  # sparse: proves the size is checked before reading
    assert_invalid(validate_run_dir(run_dir, root), "8 MiB")


@pytest.mark.parametrize("depth", [100_000, 1_000])
def test_deeply_nested_json(root: Path, depth: int) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).write_text("[" * depth + "]" * depth)
    assert_invalid(validate_run_dir(run_dir, root), "nested")


def test_nesting_inside_params_limited(root: Path) -> None:
    def nest(meta: dict[str, Any], _: Path) -> None:
        value: Any = 1
        for _i in range(100):
            value = {"k": value}
        meta["params"]["deep"] = value

    assert_invalid(
        validate_run_dir(make_run(root, mutate=nest), root),
        "nested more than 64 levels deep",
        "params.deep.k",
    )


def test_metadata_json_fifo_does_not_hang(root: Path) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).unlink()
    os.mkfifo(run_dir / METADATA_NAME)
    assert_invalid(validate_run_dir(run_dir, root), "metadata.json is a FIFO")
    assert quick_fingerprint(run_dir) is not None  # stat only, never opened


@pytest.mark.parametrize(
    "text",
    [
        '{"schema_version": 1, "run_id": "run-1", "params": {"x": "\\ud800"}}',
        '{"schema_version": 1, "run_id": "run-1", "params": {"\\udcff": 1}}',
        '{"\\udcff": 1}',
    ],
)
def test_lone_surrogates_rejected(root: Path, text: str) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).write_text(text)
    assert_invalid(validate_run_dir(run_dir, root), "lone surrogate")


def test_integer_with_too_many_digits(root: Path) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).write_text('{"rows": ' + "9" * 5000 + "}")
    assert_invalid(validate_run_dir(run_dir, root), "metadata.json cannot be parsed")


def test_metric_too_large_for_a_float(root: Path) -> None:
    def big(meta: dict[str, Any], _: Path) -> None:
        meta["metrics"]["huge"] = 10**400

    assert_invalid(validate_run_dir(make_run(root, mutate=big), root), "too large for a 64-bit")


def test_nan_metric_is_tolerated(root: Path) -> None:
    def nan(meta: dict[str, Any], _: Path) -> None:
        meta["metrics"]["sharpe"] = float("nan")

    result = validate_run_dir(make_run(root, mutate=nan), root)
    assert isinstance(result, Valid), result
    assert result.run.metrics["sharpe"] != result.run.metrics["sharpe"]
