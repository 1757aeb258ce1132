"""RunWriter: real Parquet files, real fsync/rename, a real producer process sent SIGKILL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import wait_for
from structlog.testing import capture_logs

from quantbot_bus.contract import Valid, validate_run_dir
from quantbot_bus.errors import ContractError
from quantbot_bus.provenance import git_info
from quantbot_bus.writer import RunWriter

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def read_meta(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metadata.json").read_text(encoding="utf-8"))


def assert_artifacts_match_files(run_dir: Path, meta: dict[str, Any]) -> None:
    """Every declared rows/bytes/sha256 equals what the file on disk says."""
    for a in meta["artifacts"]:
        path = run_dir / a["file"]
        data = path.read_bytes()
        assert a["format"] == "parquet"
        assert a["bytes"] == len(data) == path.stat().st_size
        assert a["sha256"] == hashlib.sha256(data).hexdigest()
        assert a["rows"] == pq.read_metadata(path).num_rows


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith((".tmp", ".partial")))


def batches(n_batches: int, rows: int) -> pa.RecordBatchReader:
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])

    def gen() -> Any:
        for b in range(n_batches):
            ids = list(range(b * rows, (b + 1) * rows))
            yield pa.record_batch([pa.array(ids), pa.array([f"r{i}" for i in ids])], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, gen())


def test_round_trip_all_input_kinds(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", None]})
    frame = pl.DataFrame({"x": [1.5, 2.5], "when": [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]})
    outside = tmp_path / "elsewhere.parquet"
    pq.write_table(pa.table({"z": [7, 8, 9, 10]}), outside)

    with RunWriter(
        root, "demo", producer=("test-producer", "1.2.3"), params={"seed": 3, "grid": [1, 2]}
    ) as w:
        w.write_table("arrow_table", table)
        w.write_table("polars_frame", frame)
        w.write_table("stream", batches(5, 1000))
        # Any object exporting an Arrow PyCapsule stream: here a DuckDB relation.
        con = duckdb.connect()
        w.write_table("capsule", con.sql("SELECT 'k' || range AS k FROM range(2)"))
        duckdb.execute(
            "COPY (SELECT range AS n FROM range(17)) TO $p (FORMAT parquet, COMPRESSION zstd)",
            {"p": str(w.path_for("from_duckdb"))},
        )
        w.add_file("from_duckdb", w.path_for("from_duckdb"))
        w.add_file("copied_in", outside)
        w.set_metrics(calls=3, hit_rate=0.25)
        assert not (w.run_dir / "metadata.json").exists()  # not before the block ends

    run_dir = root / "demo" / w.run_id
    assert w.run_dir == run_dir
    meta = read_meta(run_dir)
    assert meta["schema_version"] == 1
    assert meta["run_id"] == run_dir.name
    assert re.fullmatch(r"demo-\d{8}T\d{6}-[0-9a-f]{8}", meta["run_id"])
    assert meta["run_type"] == "demo"
    assert meta["producer"] == {"name": "test-producer", "version": "1.2.3"}
    assert meta["status"] == "success"
    assert "error" not in meta
    assert meta["params"] == {"seed": 3, "grid": [1, 2]}
    assert meta["metrics"] == {"calls": 3, "hit_rate": 0.25}
    assert meta["host"] == socket.gethostname()
    for key in ("created_at", "started_at", "finished_at"):
        assert ISO_Z.match(meta[key]), meta[key]
    assert meta["created_at"] <= meta["started_at"] <= meta["finished_at"]
    names = [a["name"] for a in meta["artifacts"]]
    assert names == [
        "arrow_table",
        "polars_frame",
        "stream",
        "capsule",
        "from_duckdb",
        "copied_in",
    ]
    assert [a["file"] for a in meta["artifacts"]] == [f"{n}.parquet" for n in names]
    assert [a["rows"] for a in meta["artifacts"]] == [3, 2, 5000, 2, 17, 4]
    assert_artifacts_match_files(run_dir, meta)
    assert leftovers(run_dir) == []
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["metadata.json", *(f"{n}.parquet" for n in names)]
    )

    # The data round-trips, and what we wrote ourselves is zstd-compressed.
    assert pq.read_table(run_dir / "arrow_table.parquet").equals(table)
    assert pl.read_parquet(run_dir / "polars_frame.parquet").equals(frame)
    stream = pq.read_table(run_dir / "stream.parquet")
    assert stream.column("i").to_pylist() == list(range(5000))
    assert pq.read_table(run_dir / "copied_in.parquet").column("z").to_pylist() == [7, 8, 9, 10]
    assert pq.read_table(run_dir / "capsule.parquet").column("k").to_pylist() == ["k0", "k1"]
    for name in ("arrow_table", "polars_frame", "stream", "capsule", "from_duckdb"):
        md = pq.read_metadata(run_dir / f"{name}.parquet")
        assert md.row_group(0).column(0).compression == "ZSTD", name


def test_writer_output_validates(tmp_path: Path) -> None:
    """The contract validator (quantbot_bus.contract) accepts what the writer writes."""
    root = tmp_path / "artifacts"
    with RunWriter(root, "demo", producer=("p", "1"), params={"a": 1}) as w:
        w.write_table("t", pa.table({"a": [1, 2]}))
        w.write_table("u", pl.DataFrame({"b": ["x"]}))
        w.set_metrics(n=2)
    result = validate_run_dir(w.run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.run_id == w.run_id
    assert result.run.status == "success"
    assert [a.name for a in result.run.artifacts] == ["t", "u"]
    assert result.run.total_rows == 3

    with pytest.raises(ValueError):
        with RunWriter(root, "demo", producer=("p", "1")) as failed:
            failed.write_table("t", pa.table({"a": [1]}))
            raise ValueError("bad input")
    result = validate_run_dir(failed.run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.status == "failed"
    assert result.run.error == "ValueError: bad input"


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


def test_metadata_appears_last(tmp_path: Path) -> None:
    """A concurrent observer never sees metadata.json before every listed file is complete."""
    root = tmp_path / "artifacts"
    run_dir = root / "demo" / "watched"
    schema = pa.schema([("i", pa.int64())])

    def slow() -> Any:
        for b in range(20):
            time.sleep(0.01)  # a slow table: the observer gets many looks while it is written
            yield pa.record_batch([pa.array(range(b * 100, b * 100 + 100))], schema=schema)

    def produce() -> None:
        with RunWriter(root, "demo", run_id="watched", producer=("p", "1")) as w:
            w.write_table("first", pa.table({"a": [1]}))
            w.write_table("second", pa.RecordBatchReader.from_batches(schema, slow()))
            w.write_table("third", pl.DataFrame({"b": [1, 2]}))

    thread = threading.Thread(target=produce)
    thread.start()
    snapshots = 0
    seen_partial = False
    try:
        while True:
            done = not thread.is_alive()
            names = set(os.listdir(run_dir)) if run_dir.exists() else set()
            seen_partial |= any(n.endswith(".partial") for n in names)
            if "metadata.json" in names:
                meta = read_meta(run_dir)  # complete JSON the moment it exists (atomic rename)
                assert {a["file"] for a in meta["artifacts"]} <= names
                assert not any(n.endswith(".partial") for n in names)
                assert_artifacts_match_files(run_dir, meta)
                assert [a["name"] for a in meta["artifacts"]] == ["first", "second", "third"]
            snapshots += 1
            if done:
                break
    finally:
        thread.join(timeout=60)
    assert seen_partial and snapshots > 1
    assert leftovers(run_dir) == []
    assert read_meta(run_dir)["status"] == "success"


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


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda w: w.write_table("1starts_with_digit", pa.table({"a": [1]})), "artifact name"),
        (lambda w: w.write_table("has-dash", pa.table({"a": [1]})), "artifact name"),
        (lambda w: w.write_table("x" * 65, pa.table({"a": [1]})), "artifact name"),
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


def test_logs_run_written(tmp_path: Path) -> None:
    with capture_logs() as logs:
        with RunWriter(tmp_path, "t", run_id="logged", producer=("p", "1")) as w:
            w.write_table("a", pa.table({"a": [1, 2]}))
    written = [e for e in logs if e["event"] == "run.written"]
    assert len(written) == 1
    assert written[0]["run_id"] == "logged"
    assert written[0]["status"] == "success"
    assert written[0]["rows"] == 2


def test_git_info_inside_and_outside_a_work_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    if git_info() is not None:
        pytest.skip("tmp_path lies inside a git work tree on this machine")
    with RunWriter(tmp_path / "a", "t", run_id="nogit", producer=("p", "1")):
        pass
    assert "git" not in read_meta(tmp_path / "a" / "t" / "nogit")

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=repo,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q", "-b", "research")
    (repo / "f.txt").write_text("1")
    git("add", "f.txt")
    git("commit", "-q", "-m", "first")
    commit = git("rev-parse", "HEAD")
    monkeypatch.chdir(repo)
    with RunWriter(tmp_path / "a", "t", run_id="clean", producer=("p", "1")):
        pass
    assert read_meta(tmp_path / "a" / "t" / "clean")["git"] == {
        "commit": commit,
        "branch": "research",
        "dirty": False,
    }
    (repo / "f.txt").write_text("2")
    with RunWriter(tmp_path / "a", "t", run_id="dirty", producer=("p", "1")):
        pass
    assert read_meta(tmp_path / "a" / "t" / "dirty")["git"]["dirty"] is True
    with RunWriter(tmp_path / "a", "t", run_id="explicit", producer=("p", "1"), git=None):
        pass
    assert "git" not in read_meta(tmp_path / "a" / "t" / "explicit")


_SLOW_PRODUCER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from quantbot_bus.writer import RunWriter

    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])

    def slow():
        for b in range(100_000):
            ids = list(range(b * 1000, (b + 1) * 1000))
            yield pa.record_batch([pa.array(ids), pa.array([str(i) for i in ids])], schema=schema)
            time.sleep(0.01)  # a long backtest: still writing when it is killed

    with RunWriter(sys.argv[1], "backtest", run_id="victim", producer=("p", "1")) as w:
        w.write_table("finished_first", pa.table({"a": [1, 2, 3]}))
        w.write_table("big", pa.RecordBatchReader.from_batches(schema, slow()))
    """
)


def test_sigkill_mid_write_leaves_no_metadata(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    run_dir = root / "backtest" / "victim"
    partial = run_dir / "big.parquet.partial"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PRODUCER, str(root)], stdout=subprocess.DEVNULL
    )

    def writing() -> bool:
        assert proc.poll() is None, "the producer exited before it was killed"
        return partial.exists() and partial.stat().st_size > 0

    try:
        wait_for(writing, "the producer to start writing its big table")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    names = sorted(p.name for p in run_dir.iterdir())
    assert "metadata.json" not in names
    assert not any(n.endswith(".tmp") for n in names)
    assert names == ["big.parquet.partial", "finished_first.parquet"]
