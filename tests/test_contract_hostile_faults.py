"""Faults inside the validator (issue 7): an unexpected exception, a crashing Parquet reader,
the run directory deleted and re-created while it is validated; each is an answer, never raised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from builders import assert_invalid, make_run

from quantbot_bus.contract import Incomplete, Invalid, Valid, quick_fingerprint, validate_run_dir


def test_unexpected_failure_becomes_invalid(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: whatever breaks inside the validator is reported, never raised."""
    import quantbot_bus.contract.validate as validate

    run_dir = make_run(root)

    def boom(*args: Any) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(validate, "metadata_object", boom)
    assert_invalid(
        validate_run_dir(run_dir, root),
        "unexpected error while validating this run: RuntimeError: injected fault",
    )


def test_parquet_reader_failure_becomes_invalid(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    run_dir = make_run(root)

    def poison(*args: Any, **kwargs: Any) -> Any:
        raise SystemError("reader crashed")

    monkeypatch.setattr(pq, "read_metadata", poison)
    assert_invalid(
        validate_run_dir(run_dir, root),
        "the Parquet footer cannot be read (SystemError: reader crashed)",
    )


def test_run_directory_deleted_while_validated(root: Path) -> None:
    """A producer (thread) keeps creating and deleting the run while it is validated."""
    import shutil
    import threading

    stop = threading.Event()
    staged = make_run(root.parent / "staging")
    target = root / "backtest" / "run-1"
    target.parent.mkdir(parents=True)

    def churn() -> None:
        while not stop.is_set():
            shutil.copytree(staged, target)
            shutil.rmtree(target, ignore_errors=True)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    seen: set[type] = set()
    try:
        for _ in range(400):
            result = validate_run_dir(target, root)
            assert isinstance(result, Valid | Incomplete | Invalid)
            seen.add(type(result))
            quick_fingerprint(target)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert Incomplete in seen
