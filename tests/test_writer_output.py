"""RunWriter's output: every input kind round-trips through real Parquet files, the contract
validator accepts the run, run.written is logged, git facts come from the work tree."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs
from writer_checks import assert_artifacts_match_files, leftovers, read_meta

from quantbot_bus.contract import Valid, validate_run_dir
from quantbot_bus.provenance import git_info
from quantbot_bus.writer import RunWriter

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


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
