"""The seed layout ``YYYY-MM/run_id=<uuid>/`` beside the v1 layout in one root: the validator,
``sync``/``rebuild``, the real daemon (watchdog observer, DuckDB), ``RunWriter(layout="seed")``
and the backtest producers. Real Parquet files everywhere; seed runs are built the way the seed
system wrote them (Parquet, run.json, logs, then ``_SUCCESS``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from builders import (
    assert_incomplete,
    assert_invalid,
    corrupt_file,
    live_run_ids,
    make_run,
    open_rejections,
    snapshot_query,
    wait_for,
    write_parquet,
)
from click.testing import CliRunner
from structlog.testing import capture_logs
from test_watch import running_daemon

from quantbot_bus import pipeline
from quantbot_bus.backtest.runner import producer_main
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.contract import Valid, quick_fingerprint, validate_run_dir
from quantbot_bus.contract.layout import is_run_dir, is_seed_dir, layout_of, run_id_of
from quantbot_bus.errors import ContractError
from quantbot_bus.exports.store import export_table_name
from quantbot_bus.fsutil import write_atomic
from quantbot_bus.writer import RunWriter

MONTH = "2026-03"
CREATED = "2026-03-02T09:30:00.000Z"

# ---------------------------------------------------------------------------- seed runs


def paths_table(run_id: str, n: int = 4) -> pa.Table:
    """``truth/paths`` with the seed's columns (a subset)."""
    return pa.table(
        {
            "run_id": [run_id] * n,
            "call_id": [f"call_m{i}_{1700000000000 + i}_0" for i in range(n)],
            "caller_name": [f"caller{i % 2}" for i in range(n)],
            "alert_ts_ms": pa.array([1700000000000 + i * 60_000 for i in range(n)], pa.int64()),
            "hit_2x": [i % 2 == 0 for i in range(n)],
            "peak_multiple": [1.5 + i for i in range(n)],
        }
    )


def trades_table(run_id: str, n: int = 3) -> pa.Table:
    """``policy/trades`` with the seed's columns (a subset)."""
    return pa.table(
        {
            "run_id": [run_id] * n,
            "policy_id": ["fixed-stop"] * n,
            "call_id": [f"c{i}" for i in range(n)],
            "realized_return_bps": [10.0 * i - 5 for i in range(n)],
            "stop_out": [i == 0 for i in range(n)],
        }
    )


def run_json(run_id: str, status: str = "completed", **fields: Any) -> dict[str, Any]:
    """A seed run.json (every field of the seed manifest); ``fields`` replace keys."""
    doc: dict[str, Any] = {
        "run_id": run_id,
        "run_type": "policy",
        "created_at": CREATED,
        "started_at": "2026-03-02T09:30:01.000Z",
        "completed_at": "2026-03-02T09:31:00.500Z",
        "status": status,
        "git_commit": "9f1c2ab",
        "git_branch": "feat/seed",
        "git_dirty": True,
        "dataset": {"from": "2026-02-01", "to": "2026-03-01", "interval": "5m", "calls_count": 4},
        "parameters": {"strategy_id": "s-7", "policy_id": "fixed-stop", "config_hash": "ab12"},
        "schema_version": {"manifest": "1.0.0", "artifacts": "1.0.0"},
        "artifacts": {
            "paths": {"rows": 4, "path": "truth/paths.parquet"},
            "trades": {"rows": 3, "path": "policy/trades.parquet"},
        },
        "timing": {"plan": 12, "coverage": 30, "execution": 700, "total": 812.5},
        "logs": {"stdout": "logs/stdout.txt", "stderr": "logs/stderr.txt"},
    }
    doc.update(fields)
    return doc


def make_seed_run(
    root: Path,
    run_id: str | None = None,
    *,
    status: str = "completed",
    success: bool = True,
    tables: dict[str, pa.Table] | None = None,
    stderr: str = "",
    month: str = MONTH,
    mutate: Callable[[dict[str, Any], Path], None] | None = None,
    **fields: Any,
) -> Path:
    """A seed run directory written in the seed's order: Parquet files, run.json, logs, then
    ``_SUCCESS`` (when ``success``). Returns the run directory."""
    run_id = run_id or str(uuid.uuid4())
    run_dir = root / month / f"run_id={run_id}"
    run_dir.mkdir(parents=True)
    if tables is None:
        tables = {"truth/paths": paths_table(run_id), "policy/trades": trades_table(run_id)}
    for name, table in tables.items():
        write_parquet(run_dir / f"{name}.parquet", table)
    doc = run_json(run_id, status, **fields)
    if mutate is not None:
        mutate(doc, run_dir)
    write_atomic(run_dir / "run.json", json.dumps(doc))
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "stdout.txt").write_text("planning...\nexecuting...\n")
    (run_dir / "logs" / "stderr.txt").write_text(stderr)
    if success:
        write_atomic(run_dir / "_SUCCESS", "2026-03-02T09:31:01.000Z\n")
    return run_dir


FAILED_STDERR = "".join(f"debug line {i}\n" for i in range(40)) + (
    'Traceback (most recent call last):\n  File "sim.ts", line 3\n'
    "Error: candles missing for mint So1abc between 2026-02-03 and 2026-02-04\n"
)


def run_row(config: Config, run_id: str) -> dict[str, Any]:
    """The published ``catalog.runs_d`` row of ``run_id`` as a dict."""
    cols = (
        "run_id, run_type, status, producer, shape, created_at, started_at, finished_at, "
        "git_commit, git_branch, git_dirty, params, metrics, error, artifact_count, deleted_at"
    )
    sql = f"SELECT {cols} FROM catalog.runs_d WHERE run_id = ?"  # noqa: S608 - constant columns
    rows = snapshot_query(config, sql, [run_id])
    assert rows, f"{run_id} is not in catalog.runs_d"
    return dict(zip([c.strip() for c in cols.split(",")], rows[0], strict=True))


def error_of(config: Config, run_id: str) -> str | None:
    rows = snapshot_query(config, "SELECT error FROM catalog.runs_d WHERE run_id = ?", [run_id])
    return rows[0][0] if rows else None


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def artifact_names(config: Config, run_id: str) -> dict[str, int]:
    rows = snapshot_query(
        config, "SELECT name, rows FROM catalog.artifacts_f WHERE run_id = ?", [run_id]
    )
    return dict(rows)


# ---------------------------------------------------------------------------- the helper


def test_the_names_alone_tell_the_layouts_apart(tmp_path: Path) -> None:
    assert is_seed_dir(f"/r/{MONTH}/run_id=0b1f") and layout_of(f"/r/{MONTH}/run_id=0b1f") == "seed"
    assert run_id_of(f"/r/{MONTH}/run_id=0b1f") == "0b1f"
    for v1 in (
        "/r/2026-13/run_id=x",
        "/r/backtest/run_id=x",
        f"/r/{MONTH}/run_id=",
        f"/r/{MONTH}/x",
    ):
        assert not is_seed_dir(v1) and layout_of(v1) == "v1", v1
    # a seed directory is a run once it holds run.json or _SUCCESS, nothing else
    run_dir = tmp_path / MONTH / "run_id=abc"
    (run_dir / "truth").mkdir(parents=True)
    write_parquet(run_dir / "truth" / "paths.parquet", 3)
    assert not is_run_dir(str(run_dir))
    (run_dir / "_SUCCESS").write_text("")
    assert is_run_dir(str(run_dir))
    assert export_table_name("truth/paths") == "truth__paths"
    assert export_table_name("backtest_call_results") == "backtest_call_results"


# ---------------------------------------------------------------------------- validator


def test_run_json_maps_onto_the_run_model(root: Path) -> None:
    run_dir = make_seed_run(
        root,
        tables={
            "truth/paths": paths_table("r"),
            "policy/trades": trades_table("r"),
            "results/frontier": pa.table({"rank": [1, 2]}),
            "inputs/alerts": pa.table({"mint": ["m"]}),
            "errors/errors": pa.table({"call_id": pa.array([], pa.string())}),
        },
    )
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    run = result.run
    assert (run.run_type, run.status, run.shape, run.producer) == (
        "policy",
        "success",
        "seed-run-json",
        "seed-run-json",
    )
    assert (run.created_at, run.started_at, run.finished_at) == (
        "2026-03-02T09:30:00Z",
        "2026-03-02T09:30:01Z",
        "2026-03-02T09:31:00.500000Z",
    )
    assert (run.git_commit, run.git_branch, run.git_dirty) == ("9f1c2ab", "feat/seed", True)
    assert run.params == {
        "strategy_id": "s-7",
        "policy_id": "fixed-stop",
        "config_hash": "ab12",
        "dataset_from": "2026-02-01",
        "dataset_to": "2026-03-01",
        "dataset_interval": "5m",
        "dataset_calls_count": 4,
    }
    assert run.metrics == {
        "timing_plan_ms": 12.0,
        "timing_coverage_ms": 30.0,
        "timing_execution_ms": 700.0,
        "timing_total_ms": 812.5,
    }
    assert {a.name: (a.file, a.rows) for a in run.artifacts} == {
        "truth/paths": ("truth/paths.parquet", 4),
        "policy/trades": ("policy/trades.parquet", 3),
        "results/frontier": ("results/frontier.parquet", 2),
        "inputs/alerts": ("inputs/alerts.parquet", 1),
        "errors/errors": ("errors/errors.parquet", 0),
    }
    assert run.error is None and json.loads(run.metadata_json)["run_id"] == run.run_id
    assert run.fingerprint == quick_fingerprint(run_dir)


def test_completion_is_the_success_marker(root: Path) -> None:
    for status in ("pending", "running", "completed"):
        run_dir = make_seed_run(root, status=status, success=False)
        assert_incomplete(validate_run_dir(run_dir, root), "no _SUCCESS yet")
    failed = make_seed_run(
        root,
        status="failed",
        success=False,
        stderr=FAILED_STDERR,
        completed_at=None,
        tables={"errors/errors": pa.table({"e": ["x"]})},
    )
    result = validate_run_dir(failed, root)
    assert isinstance(result, Valid), result
    assert result.run.status == "failed" and result.run.finished_at is None
    error = result.run.error or ""
    assert error.endswith("between 2026-02-03 and 2026-02-04")
    assert "debug line 39" in error and "debug line 10" not in error  # the tail: 20 lines
    quiet = make_seed_run(root, status="failed", success=False, tables={})
    result = validate_run_dir(quiet, root)
    assert isinstance(result, Valid) and "logs/stderr.txt is missing or empty" in str(
        result.run.error
    )


def _drop(key: str) -> Callable[[dict[str, Any], Path], None]:
    return lambda doc, run_dir: doc.pop(key)


HOSTILE: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "not json": (
        {"mutate": lambda doc, d: doc.update(_raw="{")},
        ("run.json is not valid JSON",),
    ),
    "run_id differs": (
        {"mutate": lambda doc, d: doc.update(run_id="other")},
        ("does not match the directory name", "run_id=<run_id>"),
    ),
    "unknown status": ({"status": "done"}, ("field 'status' must be one of",)),
    "failed yet _SUCCESS": ({"status": "failed"}, ("status is 'failed' but _SUCCESS exists",)),
    "no created_at": ({"mutate": _drop("created_at")}, ("field 'created_at'",)),
    "bad time": ({"created_at": "yesterday"}, ("'created_at' is not an ISO-8601 timestamp",)),
    "timing not numbers": (
        {"timing": {"total": "fast"}},
        ("field 'timing.total' must be a number",),
    ),
    "listed file missing": (
        {"mutate": lambda doc, d: (d / "policy" / "trades.parquet").unlink()},
        ("policy/trades.parquet", "is missing", "remove it from run.json's artifacts"),
    ),
    "rows differ": (
        {"mutate": lambda doc, d: doc["artifacts"]["paths"].update(rows=99)},
        ("has 4 rows in its Parquet footer but run.json declares 99",),
    ),
    "corrupt parquet": (
        {"mutate": lambda doc, d: corrupt_file(d / "truth" / "paths.parquet")},
        ("'truth/paths'", "is not a Parquet file", "write _SUCCESS only after"),
    ),
    "path escapes": (
        {"mutate": lambda doc, d: doc["artifacts"].update(x={"path": "../../etc/passwd"})},
        ("artifacts.x.path", "not a file inside this run directory"),
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_bad_seed_runs_are_rejected_with_a_reason(root: Path, case: str) -> None:
    kwargs, needles = HOSTILE[case]
    kwargs = dict(kwargs)
    mutate = kwargs.pop("mutate", None)
    raw: list[str] = []

    def hook(doc: dict[str, Any], run_dir: Path) -> None:
        if mutate is not None:
            mutate(doc, run_dir)
        if "_raw" in doc:
            raw.append(doc.pop("_raw"))

    run_dir = make_seed_run(root, mutate=hook, **kwargs)
    if raw:
        (run_dir / "run.json").write_text(raw[0])
    assert_invalid(validate_run_dir(run_dir, root), *needles)


def test_success_marker_without_manifest_is_rejected(root: Path) -> None:
    run_dir = root / MONTH / "run_id=lonely"
    run_dir.mkdir(parents=True)
    (run_dir / "_SUCCESS").write_text("2026-03-01T00:00:00Z")
    assert_invalid(validate_run_dir(run_dir, root), "_SUCCESS exists but run.json is missing")


def test_the_documented_run_json_is_accepted(root: Path) -> None:
    text = (Path(__file__).parent.parent / "docs" / "contract.md").read_text()
    block = re.search(r"<!-- seed-example -->\s*```json\n(.*?)```", text, re.S)
    assert block is not None, "docs/contract.md lost its seed run.json example"
    doc = json.loads(block.group(1))
    run_dir = make_seed_run(
        root,
        doc["run_id"],
        tables={
            "truth/paths": paths_table(doc["run_id"], 230),
            "policy/trades": trades_table("x", 230),
        },
        mutate=lambda d, _: d.update(doc),
    )
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.params["dataset_calls_count"] == 230


# ---------------------------------------------------------------------------- sync, rebuild


def test_a_mixed_tree_through_sync_and_rebuild(bus: Config) -> None:
    for i in range(2):
        make_run(bus.root, "backtest", f"v1-{i}")
    ok = [make_seed_run(bus.root) for _ in range(2)]
    other_month = make_seed_run(bus.root, month="2026-02")
    failed = make_seed_run(bus.root, status="failed", success=False, stderr=FAILED_STDERR)
    running = make_seed_run(bus.root, status="running", success=False)
    hostile = make_seed_run(bus.root, mutate=lambda doc, d: doc.update(git_dirty="yes"))
    seed_ids = {run_id_of(str(d)) for d in [*ok, other_month, failed]}

    result = pipeline.sync(bus)
    assert set(result.registered) == {"v1-0", "v1-1", *seed_ids}
    assert str(running) in result.pending
    assert live_run_ids(bus) == {"v1-0", "v1-1", *seed_ids}
    assert "field 'git_dirty' must be true/false or null" in open_rejections(bus)[str(hostile)]

    row = run_row(bus, run_id_of(str(ok[0])))
    assert (row["status"], row["shape"], row["run_type"], row["git_branch"]) == (
        "success",
        "seed-run-json",
        "policy",
        "feat/seed",
    )
    assert json.loads(row["params"])["dataset_interval"] == "5m"
    assert json.loads(row["metrics"])["timing_total_ms"] == 812.5
    assert artifact_names(bus, run_id_of(str(ok[0]))) == {"truth/paths": 4, "policy/trades": 3}
    bad = run_row(bus, run_id_of(str(failed)))
    assert bad["status"] == "failed" and bad["error"].endswith("and 2026-02-04")
    # the artifact tables: 'truth/paths' is exported as truth__paths, beside the v1 tables
    rows = snapshot_query(bus, "SELECT count(*), count(DISTINCT run_id) FROM exports.truth__paths")
    assert rows == [(4 * 4, 4)]  # four seed runs with paths (the failed one has them too)
    assert snapshot_query(bus, "SELECT count(*) FROM exports.results")[0][0] == 6

    before = snapshot_query(
        bus, "SELECT run_id, status, fingerprint, error FROM catalog.runs_d ORDER BY run_id"
    )
    pipeline.rebuild(bus)
    after = snapshot_query(
        bus, "SELECT run_id, status, fingerprint, error FROM catalog.runs_d ORDER BY run_id"
    )
    assert after == before and len(after) == 2 + 4
    assert str(hostile) in open_rejections(bus)


def test_sync_skips_unchanged_seed_runs_and_sees_late_files(bus: Config) -> None:
    make_run(bus.root, "backtest", "v1-0")
    done = make_seed_run(bus.root)
    failed = make_seed_run(bus.root, status="failed", success=False, tables={}, stderr="boom\n")
    running = make_seed_run(bus.root, status="running", success=False)
    first = pipeline.sync(bus)
    assert len(first.registered) == 3 and list(first.pending) == [str(running)]

    again = pipeline.sync(bus)  # nothing changed: every run unchanged, by fingerprint
    assert not again.registered and not again.updated
    assert set(again.unchanged) == {"v1-0", run_id_of(str(done)), run_id_of(str(failed))}

    # a late file in a registered seed run is an update; _SUCCESS arriving registers the runner
    write_parquet(done / "results" / "frontier.parquet", pa.table({"rank": [1]}))
    write_atomic(running / "_SUCCESS", "2026-03-02T10:00:00Z")
    third = pipeline.sync(bus)
    assert third.updated == [run_id_of(str(done))]
    assert third.registered == [run_id_of(str(running))]
    assert artifact_names(bus, run_id_of(str(done))) == {
        "truth/paths": 4,
        "policy/trades": 3,
        "results/frontier": 1,
    }
    assert run_row(bus, run_id_of(str(failed)))["error"] == "boom"


# ---------------------------------------------------------------------------- the daemon


@pytest.fixture
def fast(bus: Config) -> Config:
    """Short export timer; pending runs are never rechecked on a timer and no rescan comes
    during the test, so a run registered after its ``_SUCCESS`` appeared was found by the
    observer's event on that file."""
    return dataclasses.replace(
        bus, pending_recheck_s=3600.0, rescan_interval_s=3600.0, export_interval_s=0.2
    )


def test_the_daemon_registers_both_layouts_and_waits_for_success(fast: Config) -> None:
    make_run(fast.root, "backtest", "v1-before")
    before_seed = make_seed_run(fast.root)
    with capture_logs() as logs, running_daemon(fast) as daemon:
        # the startup reconcile: both layouts
        assert {"v1-before", run_id_of(str(before_seed))} <= live_run_ids(fast)
        # a seed run written in the seed's order: everything but _SUCCESS
        late = make_seed_run(fast.root, success=False)
        late_id = run_id_of(str(late))
        wait_for(lambda: str(late) in daemon.pending, "the run without _SUCCESS pending")
        pend = [e for e in events(logs, "run.pending") if e["run_dir"] == str(late)]
        assert "no _SUCCESS yet" in pend[0]["reason"]
        make_run(fast.root, "backtest", "v1-during")  # a v1 run meanwhile is registered
        wait_for(lambda: "v1-during" in live_run_ids(fast), "the v1 run registered")
        assert late_id not in live_run_ids(fast)
        write_atomic(late / "_SUCCESS", "2026-03-02T09:31:01.000Z\n")  # the inotify event
        wait_for(lambda: late_id in live_run_ids(fast), "registered once _SUCCESS appeared")
        assert str(late) not in daemon.pending
        # a failed run: cataloged failed with its stderr tail
        failed = make_seed_run(fast.root, status="failed", success=False, stderr=FAILED_STDERR)
        failed_id = run_id_of(str(failed))
        # (written in the seed's order, run.json before the logs: it may be cataloged first
        # without its stderr, then updated by the event on logs/stderr.txt)
        wait_for(
            lambda: str(error_of(fast, failed_id)).endswith("between 2026-02-03 and 2026-02-04"),
            "the failed run cataloged with its stderr tail",
        )
        assert run_row(fast, failed_id)["status"] == "failed"
        # a hostile one: rejected with its reason, the daemon carries on
        hostile = make_seed_run(fast.root, mutate=lambda doc, d: doc.update(status="done"))
        reason = wait_for(lambda: open_rejections(fast).get(str(hostile)), "the rejection")
        assert "field 'status' must be one of" in reason
        # the seed writer through the daemon
        with RunWriter(fast.root, "path-only", layout="seed", git=None) as w:
            w.write_table("truth/paths", paths_table(w.run_id))
        wait_for(lambda: w.run_id in live_run_ids(fast), "the RunWriter seed run")
        assert artifact_names(fast, w.run_id) == {"truth/paths": 4}
    registered = {e.get("run_id") for e in events(logs, "run.registered")}
    assert {"v1-during", late_id, failed_id, w.run_id} <= registered


# ---------------------------------------------------------------------------- the writer


def test_run_writer_seed_layout_round_trip(bus: Config) -> None:
    params = {"strategy_id": "s1", "tp": 2.0}
    with RunWriter(
        bus.root, "optimization", layout="seed", params=params, producer=("my-opt", "2.1"), git=None
    ) as w:
        w.write_table("truth/paths", paths_table(w.run_id))
        w.write_table("frontier", pa.table({"rank": [1, 2, 3]}))  # no folder: results/
        target = w.path_for("policy/trades")
        write_parquet(target, trades_table(w.run_id))
        w.add_file("policy/trades", target)
        w.set_metrics(calls=4, best_return_bps=12.5)
        with pytest.raises(ContractError, match="not valid for the seed layout"):
            w.write_table("nowhere/x", paths_table("x"))
    run_dir = w.run_dir
    assert run_dir.parent.parent == bus.root and is_seed_dir(str(run_dir))
    assert run_dir.name == f"run_id={w.run_id}" and str(uuid.UUID(w.run_id)) == w.run_id
    names = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    assert names == [
        "_SUCCESS",
        "logs/stderr.txt",
        "logs/stdout.txt",
        "policy/trades.parquet",
        "results/frontier.parquet",
        "run.json",
        "truth/paths.parquet",
    ]
    # the order the bus relies on: logs, run.json, then _SUCCESS
    mtimes = {
        n: os.stat(run_dir / n).st_mtime_ns for n in ("logs/stderr.txt", "run.json", "_SUCCESS")
    }
    assert mtimes["logs/stderr.txt"] <= mtimes["run.json"] <= mtimes["_SUCCESS"]
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["status"] == "completed" and doc["parameters"] == params
    assert doc["artifacts"]["paths"] == {"rows": 4, "path": "truth/paths.parquet"}

    with pytest.raises(RuntimeError, match="no candles"):
        with RunWriter(bus.root, "policy", layout="seed", git=None) as broken:
            broken.write_table("errors/errors", pa.table({"call_id": ["c1"]}))
            raise RuntimeError("no candles for So1abc")
    assert not (broken.run_dir / "_SUCCESS").exists()
    assert "RuntimeError: no candles for So1abc" in (broken.run_dir / "logs/stderr.txt").read_text()

    result = pipeline.sync(bus)
    assert set(result.registered) == {w.run_id, broken.run_id}
    row = run_row(bus, w.run_id)
    assert (row["status"], row["producer"], row["run_type"]) == (
        "success",
        "my-opt",
        "optimization",
    )
    assert json.loads(row["params"]) == params
    metrics = json.loads(row["metrics"])
    assert metrics["calls"] == 4 and metrics["best_return_bps"] == 12.5
    assert "timing_total_ms" in metrics
    assert artifact_names(bus, w.run_id) == {
        "truth/paths": 4,
        "results/frontier": 3,
        "policy/trades": 3,
    }
    failed = run_row(bus, broken.run_id)
    assert failed["status"] == "failed" and "RuntimeError: no candles for So1abc" in failed["error"]
    with pytest.raises(ContractError, match="layout 'flat'"):
        RunWriter(bus.root, "x", layout="flat")


def test_the_producers_emit_the_seed_layout(
    bus: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "backtest",
            "run",
            "--strategy",
            "path-only",
            "--calls",
            "12",
            "--layout",
            "seed",
            "--root",
            str(bus.root),
        ],
    )
    assert out.exit_code == 0, out.output
    run_id, run_dir = out.stdout.strip().split("\t")
    assert is_seed_dir(run_dir) and Path(run_dir).parent.parent == bus.root
    assert (
        producer_main("policy", ["--root", str(bus.root), "--calls", "12", "--layout", "seed"]) == 0
    )
    policy_id, policy_dir = capsys.readouterr().out.strip().split("\t")
    result = pipeline.sync(bus)
    assert set(result.registered) == {run_id, policy_id}
    assert artifact_names(bus, run_id) == {"truth/backtest_call_path_metrics": 12}
    assert set(artifact_names(bus, policy_id)) == {
        "policy/backtest_policy_results",
        "policy/backtest_call_results",
    }
    assert run_row(bus, policy_id)["shape"] == "seed-run-json"
    help_text = runner.invoke(main, ["backtest", "run", "--help"]).output
    assert "--layout [v1|seed]" in help_text
