"""Property tests of the validator (issue 7): arbitrary JSON documents, mutated documents,
arbitrary bytes as metadata.json and as the Parquet file, in a run directory holding files of
every awkward kind; every answer is a Valid, Incomplete or Invalid with a reason, never an
exception.

They run 200 examples each by default and 5,000 with ``QUANTBOT_BUS_SOAK=1`` (``make soak`` runs
them so: tests/reliability/test_hostile_e2e.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from builders import SOAK, V1_REQUIRED, v1_metadata, write_metadata, write_parquet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantbot_bus.contract import (
    METADATA_NAME,
    RUN_ID_RE,
    Incomplete,
    Invalid,
    Valid,
    quick_fingerprint,
    validate_run_dir,
)

PROPERTY = settings(
    max_examples=5000 if SOAK else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None), max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
# keys and values that exercise the real schema, not only random noise
FIELDS = [
    *V1_REQUIRED,
    "git",
    "host",
    "metrics",
    "error",
    "backtest_type",
    "table_name",
    "parquet_file",
    "rows",
    "created_at_utc",
]
file_strings = st.one_of(
    st.text(st.characters(codec=None), max_size=40),
    st.sampled_from(
        [
            "results.parquet",
            "../results.parquet",
            "/etc/passwd",
            "sub/results.parquet",
            ".x",
            "a.tmp",
            "link.parquet",
            "fifo.parquet",
            "dir.parquet",
            "garbage.parquet",
        ]
    ),
)


def _check_result(result: Any) -> None:
    assert isinstance(result, Valid | Incomplete | Invalid)
    if isinstance(result, Valid):
        run = result.run
        assert RUN_ID_RE.fullmatch(run.run_id)
        for art in run.artifacts:
            parts = art.file.split("/")
            assert ".." not in parts and not art.file.startswith("/")
            assert not any(p.startswith(".") for p in parts)
    else:
        result.reason.encode("utf-8")
        assert result.reason


def _shaped_dir(base: Path) -> tuple[Path, Path]:
    """A root with one run directory 'run-1' holding files of every awkward kind."""
    root = base / "root"
    run_dir = root / "backtest" / "run-1"
    run_dir.mkdir(parents=True)
    write_parquet(run_dir / "results.parquet", 3)
    write_parquet(run_dir / "sub" / "results.parquet", 2)
    (run_dir / "garbage.parquet").write_bytes(b"PAR1" + b"\x00" * 40 + b"PAR1")
    (run_dir / "dir.parquet").mkdir()
    os.mkfifo(run_dir / "fifo.parquet")
    (run_dir / "link.parquet").symlink_to("/etc/passwd")
    return root, run_dir


@PROPERTY
@given(doc=json_values)
def test_property_arbitrary_json_document(doc: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = _shaped_dir(Path(tmp))
        (run_dir / METADATA_NAME).write_text(json.dumps(doc), encoding="utf-8")
        _check_result(validate_run_dir(run_dir, root))
        assert quick_fingerprint(run_dir) is not None


@PROPERTY
@given(
    replacements=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
    drops=st.sets(st.sampled_from(FIELDS), max_size=3),
    file=file_strings,
    rows=st.one_of(st.none(), st.integers(min_value=-5, max_value=10), json_values),
    ts_shape=st.booleans(),
)
def test_property_mutated_documents(
    replacements: dict[str, Any], drops: set[str], file: str, rows: Any, ts_shape: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = _shaped_dir(Path(tmp))
        doc: dict[str, Any]
        if ts_shape:
            doc = {
                "run_id": "run-1",
                "backtest_type": "full",
                "table_name": "t",
                "rows": rows,
                "created_at_utc": "2024-05-01T12:00:00Z",
                "parquet_file": file,
            }
        else:
            doc = v1_metadata(
                "run-1",
                "backtest",
                [{"name": "t", "file": file, "format": "parquet", "rows": rows}],
            )
        doc.update(replacements)
        for key in drops:
            doc.pop(key, None)
        (run_dir / METADATA_NAME).write_text(json.dumps(doc), encoding="utf-8")
        result = validate_run_dir(run_dir, root)
        _check_result(result)
        fp = quick_fingerprint(run_dir)
        assert fp is not None
        if isinstance(result, Valid):
            assert result.run.fingerprint == fp


@PROPERTY
@given(raw=st.binary(max_size=300))
def test_property_arbitrary_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = _shaped_dir(Path(tmp))
        (run_dir / METADATA_NAME).write_bytes(raw)
        _check_result(validate_run_dir(run_dir, root))
        quick_fingerprint(run_dir)


@PROPERTY
@given(data=st.binary(max_size=2000), declared_bytes=st.one_of(st.none(), st.integers(0, 3000)))
def test_property_arbitrary_parquet_bytes(data: bytes, declared_bytes: int | None) -> None:
    """Random bytes (often starting/ending with PAR1) as the Parquet file: footer parsing of
    garbage is answered, never raised."""
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = _shaped_dir(Path(tmp))
        (run_dir / "results.parquet").write_bytes(b"PAR1" + data + b"PAR1" if data[:1] else data)
        doc = v1_metadata(
            "run-1",
            "backtest",
            [
                {
                    "name": "t",
                    "file": "results.parquet",
                    "format": "parquet",
                    "bytes": declared_bytes,
                }
            ],
        )
        write_metadata(run_dir, doc)
        _check_result(validate_run_dir(run_dir, root))
