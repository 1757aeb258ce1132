"""Scale-out: runs uploaded to a real S3-compatible server (moto_server) are registered into
Iceberg tables on a real PostgreSQL catalog by real daemon processes, each run exactly once."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import pytest
from builders import wait_for
from scaleout import local_run

#: Every poll is a few PostgreSQL commits and many requests to moto: generous on a loaded machine.
pytestmark = pytest.mark.timeout(240)


#: How long PostgreSQL stays down in the outage test (issue #13: "stopped for 30 s").
OUTAGE_S = 30.0


def _registered(so: Any, n: int) -> bool:
    return sum(so.run_counts("runs_d").values()) >= n


def test_a_daemon_registers_uploaded_runs_once_in_every_table(scaleout: Any) -> None:
    d = scaleout.daemon().start()
    for p in scaleout.writers(2, 10):
        assert p.wait(120) == 0
    wait_for(lambda: _registered(scaleout, 20), "20 runs in runs_d", 120)
    runs = scaleout.run_counts("runs_d")
    assert len(runs) == 20 and set(runs.values()) == {1}
    trades = scaleout.run_counts("trades")
    fills = scaleout.run_counts("fills")
    assert trades == {r: 3 for r in runs}
    assert fills == {r: 2 for r in runs}
    how = {e["reason"] for e in d.events("iceberg.rewrite")}
    assert how == {"the file has no string run_id column"}
    assert d.stop() == 0
    assert d.events("daemon.stopped")


#: (writer processes, runs each): the fast suite's race and the soak's (500 runs). Each poll is
#: a few commits to PostgreSQL and many requests to moto: seconds on a loaded 2-core machine.
RACES = [
    pytest.param(4, 15, id="60-runs", marks=pytest.mark.timeout(300)),
    pytest.param(4, 125, id="500-runs", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
]


def _exactly_once(so: Any, expected: set[str]) -> None:
    runs = so.run_counts("runs_d")
    assert set(runs) == expected, (
        f"missing {sorted(expected - set(runs))[:5]}, extra {sorted(set(runs) - expected)[:5]}"
    )
    assert {r: n for r, n in runs.items() if n != 1} == {}
    assert so.run_counts("trades") == {r: 3 for r in expected}
    assert so.run_counts("fills") == {r: 2 for r in expected}
    arts = so.run_counts("artifacts_f")
    assert arts == {r: 2 for r in expected}


@pytest.mark.parametrize(("procs", "each"), RACES)
def test_two_daemons_and_four_writers_register_every_run_exactly_once(
    scaleout: Any, procs: int, each: int
) -> None:
    """Two daemons (own state dirs and processes, as on two hosts) race for the same runs while
    four writer processes upload; one daemon is SIGKILLed mid-stream and restarted."""
    a = scaleout.daemon("state-a").start()
    b = scaleout.daemon("state-b").start()
    writers = scaleout.writers(procs, each)
    expected = {f"w{i}-{j:05d}" for i in range(procs) for j in range(each)}
    # kill -9 one daemon once it has registered something: mid-commit as often as not
    a.wait_for(lambda: a.events("batch.committed"), "daemon a's first batch", 120)
    a.kill()
    a.start()
    for p in writers:
        assert p.wait(600) == 0
    wait_for(
        lambda: len(scaleout.run_counts("runs_d")) >= len(expected), f"{len(expected)} runs", 300
    )
    _exactly_once(scaleout, expected)
    by = {e["run_id"] for d in (a, b) for e in d.events("run.registered")}
    assert by == expected
    lost = sum(len(d.events("run.already_registered")) for d in (a, b))
    print(
        f"\n{len(expected)} runs; daemon a registered {len(a.events('run.registered'))}, "
        f"b {len(b.events('run.registered'))}; lost races {lost}; "
        f"commit retries {sum(len(d.events('iceberg.commit_lost')) for d in (a, b))}"
    )
    assert a.stop() == 0 and b.stop() == 0


def test_append_once_is_exactly_once_under_concurrent_commits(scaleout: Any) -> None:
    """Eight threads commit overlapping key sets to one table at once (each with its own
    catalog connection): every key lands exactly once."""
    import threading

    import pyarrow as pa

    from quantbot_bus.iceberg.commit import append_once
    from quantbot_bus.iceberg.tables import ensure_table

    schema = pa.schema([pa.field("run_id", pa.string(), nullable=False)])
    ensure_table(scaleout.catalog(), "race", schema)
    keys = [f"k{i:03d}" for i in range(60)]
    errors: list[BaseException] = []
    won: list[list[str]] = []

    def worker(n: int) -> None:
        try:
            cat = scaleout.catalog()
            mine = keys[n * 5 : n * 5 + 30]  # each overlaps its neighbours
            for start in range(0, len(mine), 10):
                chunk = mine[start : start + 10]
                won.append(
                    append_once(
                        cat,
                        "race",
                        chunk,
                        lambda tx, add, props: tx.append(
                            pa.table({"run_id": add}, schema=schema), snapshot_properties=props
                        ),
                    )
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    counts = scaleout.run_counts("race")
    covered = {k for n in range(8) for k in keys[n * 5 : n * 5 + 30]}
    assert counts == {k: 1 for k in covered}
    assert sorted(k for w in won for k in w) == sorted(covered)


def test_postgres_down_mid_stream_degrades_then_loses_nothing(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stops for 30 s while runs arrive: the daemon stays up, reports degraded with
    the reason (in its status and in doctor), retries with a backoff capped at 30 s, and
    registers every run once PostgreSQL is back."""
    from quantbot_bus.ops.doctor import run_checks

    scaleout.reach_s3(monkeypatch)  # doctor probes the object store from this process
    d = scaleout.daemon().start()
    first = scaleout.writers(1, 5, tag="a")
    assert first[0].wait(120) == 0
    wait_for(lambda: len(scaleout.run_counts("runs_d")) == 5, "the first 5 runs", 120)
    scaleout.pg.stop()
    stopped = time.monotonic()
    try:
        second = scaleout.writers(1, 5, tag="b")
        assert second[0].wait(120) == 0
        status = d.wait_for(
            lambda: s if (s := d.status()) and s.get("degraded") else None, "status degraded", 120
        )
        assert "OperationalError" in status["degraded"] or "connect" in status["degraded"]
        assert d.alive()
        doctor = {c.name: c for c in run_checks(scaleout.config(), expect_daemon=True)}
        assert doctor["status"].status == "fail"
        assert f"runs degraded: {status['degraded'][:40]}" in doctor["status"].detail
        assert "PostgreSQL at catalog_uri" in (doctor["status"].fix or "")
        assert doctor["iceberg_catalog"].status == "fail"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage's length
        assert d.alive()
    finally:
        scaleout.pg.start()
    d.wait_for(
        lambda: len(scaleout.run_counts("runs_d")) == 10, "all 10 runs after the outage", 120
    )
    d.wait_for(lambda: (d.status() or {}).get("degraded") is None, "degraded cleared", 60)
    expected = {f"{t}0-{j:05d}" for t in "ab" for j in range(5)}
    assert set(scaleout.run_counts("runs_d")) == expected
    assert set(scaleout.run_counts("runs_d").values()) == {1}
    assert d.events("daemon.degraded") and d.events("daemon.recovered")
    assert all(0 < e["retry_in_s"] <= 30 for e in d.events("daemon.degraded"))
    assert d.stop() == 0


def test_hostile_objects_are_rejected_with_a_reason_and_good_runs_still_register(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.objectstore.upload import upload_run

    def bad_parquet(meta: dict[str, Any], run_dir: Any) -> None:
        path = run_dir / "trades.parquet"
        path.write_bytes(b"PAR1" + b"\x00" * (path.stat().st_size - 4))
        meta["artifacts"][0].pop("sha256", None)

    def huge(meta: dict[str, Any], run_dir: Any) -> None:
        meta["artifacts"][0]["bytes"] = 5 * 1024**3  # a 5 GB claimed size

    scaleout.reach_s3(monkeypatch)  # this process reads the tables as a user would
    client = scaleout.s3.client()
    loc = S3Location.parse(scaleout.root)
    d = scaleout.daemon(QUANTBOT_BUS_RESCAN_INTERVAL_S="2").start()
    for run_id, edit in (
        ("good-1", None),
        ("bad-parquet", bad_parquet),
        ("huge", huge),
        ("good-2", None),
    ):
        upload_run(client, local_run(scaleout.tmp, run_id, edit), loc, "backtest", run_id)
    # a key that climbs out of its run type, and a marker that does
    client.put_object(Bucket=scaleout.bucket, Key="runs/backtest/../evil/metadata.json", Body=b"{}")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    client.put_object(Bucket=scaleout.bucket, Key=f"runs/_inbox/{stamp}/backtest/..", Body=b"")

    def rejections() -> dict[str, str]:
        """run_dir (below the root) -> reason, as a reader of rejections_f sees them."""
        from quantbot_bus.iceberg.reader import open_iceberg_reader

        with open_iceberg_reader(scaleout.config()) as con:
            rows = con.execute("SELECT run_dir, reason FROM catalog.rejections_f").fetchall()
        return {run_dir.removeprefix(scaleout.root + "/"): reason for run_dir, reason in rows}

    d.wait_for(lambda: len(scaleout.run_counts("runs_d")) == 2, "the two good runs", 120)
    found = d.wait_for(lambda: r if len(r := rejections()) >= 4 else None, "four rejections", 120)
    assert set(scaleout.run_counts("runs_d")) == {"good-1", "good-2"}
    reasons = "\n".join(f"{k}: {v}" for k, v in sorted(found.items()))
    assert set(found) == {
        "backtest/bad-parquet",
        "backtest/huge",
        "backtest/../evil/metadata.json",
        f"_inbox/{stamp}/backtest/..",
    }, reasons
    assert "is not a Parquet file" in found["backtest/bad-parquet"], reasons
    assert "5368709120" in found["backtest/huge"] and "will not change" in found["backtest/huge"]
    assert "<run_type>/<run_id>/metadata.json" in found["backtest/../evil/metadata.json"]
    assert "'..'" in found[f"_inbox/{stamp}/backtest/.."]
    assert d.alive()
    # seen again by every reconcile, recorded once
    seen = (d.status() or {}).get("reconciles", 0)
    d.wait_for(
        lambda: (d.status() or {}).get("reconciles", 0) >= seen + 2, "two more reconciles", 60
    )
    assert len(rejections()) == len(found)
    assert d.stop() == 0


def test_other_processes_read_the_tables_with_pyiceberg_duckdb_polars_and_the_cli(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a sync, a separate reader process sees the runs through pyiceberg -> Arrow ->
    DuckDB and Polars ``scan_iceberg``; the CLI's runs, show, query and stats read the same."""
    import json
    import os
    import subprocess
    import sys

    from click.testing import CliRunner

    from quantbot_bus.cli import main as cli
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)  # this process is a user's shell
    for p in scaleout.writers(1, 4):
        assert p.wait(120) == 0
    result = sync(scaleout.config())
    assert sorted(result.registered) == [f"w0-{i:05d}" for i in range(4)]
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("_iceberg_reader.py")),
            scaleout.catalog_uri,
            f"s3://{scaleout.bucket}/warehouse",
        ],
        env={**os.environ, **scaleout.s3.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout)
    assert seen == {"runs": 4, "per_run": {f"w0-{i:05d}": 3 for i in range(4)}, "joined": 12}

    env = {**scaleout.env(), "QUANTBOT_BUS_LOG_LEVEL": "warning"}
    runner = CliRunner()
    runs = runner.invoke(cli, ["runs", "--format", "json"], env=env)
    assert runs.exit_code == 0, runs.output
    assert sorted(r["run_id"] for r in json.loads(runs.output)) == [f"w0-{i:05d}" for i in range(4)]
    show = runner.invoke(cli, ["show", "w0-00002", "--format", "json"], env=env)
    assert show.exit_code == 0, show.output
    [shown] = json.loads(show.output)
    assert shown["run_id"] == "w0-00002" and {a["name"] for a in shown["artifacts"]} == {
        "trades",
        "fills",
    }
    query = runner.invoke(
        cli, ["query", "SELECT count(*) AS n FROM exports.trades", "--format", "csv"], env=env
    )
    assert (query.exit_code, query.output) == (0, "n\n12\n")
    stats = runner.invoke(cli, ["stats", "--format", "json"], env=env)
    assert stats.exit_code == 0, stats.output
    assert [(s["run_type"], s["runs"]) for s in json.loads(stats.output)] == [
        ("backtest", 4),
        (None, 4),  # the total row
    ]
    missing = runner.invoke(cli, ["show", "nope"], env=env)
    assert missing.exit_code == 5, missing.output


@pytest.mark.parametrize("fault", ["unreachable", "errors", "slow"])
def test_object_store_faults_mid_stream_lose_nothing(scaleout: Any, fault: str) -> None:
    """The daemon reaches the (real) object store through a TCP proxy that, while runs arrive,
    is cut (unreachable), answers every request with 503 SlowDown itself (errors), or holds
    every chunk of every answer 0.1 s (slow): it stays up, reports degraded with the reason
    while the store fails, and registers every run once, once the store is back."""
    from tcpproxy import TcpProxy

    proxy = TcpProxy(scaleout.s3.port)
    try:
        d = scaleout.daemon(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}").start()
        assert scaleout.writers(1, 3, tag="a")[0].wait(120) == 0
        d.wait_for(lambda: len(scaleout.run_counts("runs_d")) == 3, "the first 3 runs", 120)
        {"unreachable": proxy.cut, "errors": proxy.fail, "slow": lambda: proxy.slow(0.1)}[fault]()
        assert scaleout.writers(1, 3, tag="b")[0].wait(120) == 0  # straight to the store
        if fault == "slow":
            d.wait_for(lambda: len(scaleout.run_counts("runs_d")) == 6, "6 runs, slowly", 120)
            assert not d.events("daemon.degraded")
        else:
            status = d.wait_for(
                lambda: s if (s := d.status()) and s.get("degraded") else None,
                "status degraded",
                120,
            )
            why = status["degraded"]
            if fault == "errors":
                assert "SlowDown" in why or "503" in why, status
            else:  # botocore: "Could not connect to the endpoint URL"; pyarrow's curl:
                # "AWS Error NETWORK_CONNECTION ... Empty reply from server" (cut after accept)
                assert any(w in why.lower() for w in ("endpoint", "connect", "empty reply")), status
            assert len(scaleout.run_counts("runs_d")) == 3
            assert d.alive()
        proxy.restore()
        d.wait_for(lambda: len(scaleout.run_counts("runs_d")) == 6, "all 6 runs", 120)
        d.wait_for(lambda: (d.status() or {}).get("degraded") is None, "degraded cleared", 60)
        assert set(scaleout.run_counts("runs_d").values()) == {1}
        assert d.stop() == 0
    finally:
        proxy.close()


def test_run_writer_uploads_to_s3_and_refuses_a_run_id_already_there(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    from quantbot_bus.errors import ContractError
    from quantbot_bus.writer import RunWriter

    scaleout.reach_s3(monkeypatch)
    with RunWriter(scaleout.root, "backtest", run_id="once", git=None) as w:
        w.write_table("trades", pa.table({"run_id": ["once"], "pnl": [1.0]}))
    assert not w.root.exists()  # the staging directory is gone
    keys = sorted(
        o["Key"] for o in scaleout.s3.client().list_objects_v2(Bucket=scaleout.bucket)["Contents"]
    )
    assert keys[-2:] == ["runs/backtest/once/metadata.json", "runs/backtest/once/trades.parquet"]
    assert keys[0].startswith("runs/_inbox/") and keys[0].endswith("/backtest/once")
    again = RunWriter(scaleout.root, "backtest", run_id="once", git=None)
    with pytest.raises(ContractError, match="already in s3://"):
        again.__enter__()
    assert not again.root.exists()
