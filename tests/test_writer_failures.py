"""RunWriter when things go wrong: an exception in the block writes a failed run, bad
arguments and bad calls are refused, an existing run directory is never touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from writer_checks import assert_artifacts_match_files, leftovers, read_meta

from quantbot_bus.errors import ContractError
from quantbot_bus.writer import RunWriter


def test_exception_in_block_writes_failed_metadata(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    with pytest.raises(RuntimeError, match="market data missing"):
        with RunWriter(root, "backtest", run_id="r1", producer=("p", "1")) as w:
            w.write_table("done", pa.table({"a": [1, 2, 3]}))
            w.set_metrics(calls=3)
            raise RuntimeError("market data missing")
    run_dir = root / "backtest" / "r1"
    meta = read_meta(run_dir)
    assert meta["status"] == "failed"
    assert meta["error"] == "RuntimeError: market data missing"
    assert meta["metrics"] == {"calls": 3}
    assert [a["name"] for a in meta["artifacts"]] == ["done"]  # what was completed is kept
    assert_artifacts_match_files(run_dir, meta)
    assert leftovers(run_dir) == []


def test_exception_inside_a_stream_removes_the_partial_file(tmp_path: Path) -> None:
    schema = pa.schema([("i", pa.int64())])

    def gen() -> Any:
        yield pa.record_batch([pa.array([1, 2])], schema=schema)
        raise KeyError("price feed")

    root = tmp_path / "artifacts"
    with pytest.raises(KeyError):
        with RunWriter(root, "backtest", run_id="r2", producer=("p", "1")) as w:
            w.write_table("half", pa.RecordBatchReader.from_batches(schema, gen()))
    meta = read_meta(w.run_dir)
    assert meta["status"] == "failed"
    assert meta["error"] == "KeyError: 'price feed'"
    assert meta["artifacts"] == []
    assert sorted(p.name for p in w.run_dir.iterdir()) == ["metadata.json"]


def test_exception_without_message(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with RunWriter(tmp_path, "t", run_id="r", producer=("p", "1")):
            raise ZeroDivisionError()
    assert read_meta(tmp_path / "t" / "r")["error"] == "ZeroDivisionError"


def test_refuses_an_existing_run_dir(tmp_path: Path) -> None:
    existing = tmp_path / "backtest" / "taken"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("old run")
    writer = RunWriter(tmp_path, "backtest", run_id="taken", producer=("p", "1"))
    with pytest.raises(ContractError, match="already exists"):
        with writer:
            pytest.fail("must not enter")
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]

    with RunWriter(tmp_path, "backtest", run_id="fresh", producer=("p", "1")):
        pass
    with pytest.raises(ContractError, match="already exists"):
        with RunWriter(tmp_path, "backtest", run_id="fresh", producer=("p", "1")):
            pass
    assert read_meta(tmp_path / "backtest" / "fresh")["status"] == "success"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"run_type": "../escape"}, "run_type"),
        ({"run_type": ".hidden"}, "run_type"),
        ({"run_type": "t" * 65}, "at most 64 characters"),  # run_schema.json's limit
        ({"run_type": "t\n"}, "run_type"),  # '$' alone would let a final newline through
        ({"run_id": "r1\n"}, "run_id"),
        ({"run_id": "has space"}, "run_id"),
        ({"run_id": "-leading-dash"}, "run_id"),
        ({"run_id": "x" * 129}, "run_id"),
        ({"run_id": ""}, "run_id"),
        ({"producer": ("only-name",)}, "producer"),
        ({"producer": ("name", "")}, "producer"),
        ({"params": {"x": float("nan")}}, "params"),
        ({"params": {"x": object()}}, "params"),
    ],
)
def test_bad_constructor_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"run_type": "t", "producer": ("p", "1"), **kwargs}
    with pytest.raises(ContractError, match=message):
        RunWriter(tmp_path, **args)
    assert not (tmp_path / "t").exists()


def test_the_longest_run_type_the_writer_takes_is_one_the_bus_registers(tmp_path: Path) -> None:
    """64 characters in a v1 run's metadata.json (run_schema.json); the writer used to take
    up to 128, writing runs the bus then rejected."""
    from quantbot_bus.contract import Valid, validate_run_dir

    run_type = "t" * 64
    with RunWriter(tmp_path, run_type, run_id="r", producer=("p", "1"), git=None) as w:
        w.write_table("results", pa.table({"a": [1]}))
    assert isinstance(validate_run_dir(tmp_path / run_type / "r", tmp_path), Valid)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda w: w.write_table("1starts_with_digit", pa.table({"a": [1]})), "artifact name"),
        (lambda w: w.write_table("has-dash", pa.table({"a": [1]})), "artifact name"),
        (lambda w: w.write_table("x" * 65, pa.table({"a": [1]})), "artifact name"),
        (lambda w: w.write_table("t\n", pa.table({"a": [1]})), "artifact name"),
        (lambda w: w.write_table("t", [1, 2, 3]), "write_table"),
        (lambda w: w.set_metrics(flag=True), "not bool"),
        (lambda w: w.set_metrics(x=float("nan")), "finite"),
        (lambda w: w.set_metrics(x=float("inf")), "finite"),
        (lambda w: w.set_metrics(x="12"), "number"),
        (lambda w: w.add_file("missing", w.run_dir / "nope.parquet"), "does not exist"),
    ],
)
def test_bad_calls_inside_the_block(tmp_path: Path, action: Any, message: str) -> None:
    with pytest.raises((ContractError, TypeError), match=message):
        with RunWriter(tmp_path, "t", run_id="r", producer=("p", "1")) as w:
            action(w)
    meta = read_meta(tmp_path / "t" / "r")
    assert meta["status"] == "failed"
    assert message.split()[0] in meta["error"]


def test_duplicate_artifact_name(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="already written"):
        with RunWriter(tmp_path, "t", run_id="r", producer=("p", "1")) as w:
            w.write_table("t", pa.table({"a": [1]}))
            w.write_table("t", pa.table({"a": [2]}))
    assert [a["name"] for a in read_meta(tmp_path / "t" / "r")["artifacts"]] == ["t"]


def test_add_file_rejects_non_parquet_and_hidden_names(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="not a readable Parquet file"):
        with RunWriter(tmp_path, "t", run_id="r1", producer=("p", "1")) as w:
            w.path_for("bogus").write_text("not parquet at all")
            w.add_file("bogus", w.path_for("bogus"))
    assert sorted(p.name for p in (tmp_path / "t" / "r1").iterdir()) == ["metadata.json"]

    with pytest.raises(ContractError, match="hidden or .tmp"):
        with RunWriter(tmp_path, "t", run_id="r2", producer=("p", "1")) as w:
            hidden = w.run_dir / ".scratch.parquet"
            pq.write_table(pa.table({"a": [1]}), hidden)
            w.add_file("hidden", hidden)


def test_use_outside_the_block_is_an_error(tmp_path: Path) -> None:
    w = RunWriter(tmp_path, "t", run_id="r", producer=("p", "1"))
    with pytest.raises(ContractError, match="context manager"):
        w.write_table("a", pa.table({"a": [1]}))
    with w:
        pass
    with pytest.raises(ContractError, match="already finished"):
        w.write_table("a", pa.table({"a": [1]}))
