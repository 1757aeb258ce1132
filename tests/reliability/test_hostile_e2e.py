"""Hostile run directories dropped into a LIVE daemon: each rejected with a clear reason, the
daemon never crashes, and good runs dropped after them register.

The validator's own hostile cases are in tests/test_contract_hostile_*.py, its property tests in
tests/test_contract_hostile_properties.py (200 hypothesis examples per property, 5,000 with
QUANTBOT_BUS_SOAK=1); this module drives a handful of them end to end: contract -> daemon ->
catalog.rejections_f -> ``quantbot-bus rejected --format json``. The duplicated run_id under two
run types can only be caught by the catalog, so it is here too.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import (
    RunFactory,
    artifact_entry,
    live_run_ids,
    open_rejections,
    snapshot_query,
    v1_metadata,
    wait_for,
    write_metadata,
)

from quantbot_bus.catalog import db_text
from quantbot_bus.config import Config

from .helpers import CLEAN_ENV, DaemonProcess, run_cli

SQL_RUN_ID = "q'\"; DROP TABLE catalog.runs_d; --\nü"


def build_cases(staging: Path, factory: RunFactory) -> dict[str, tuple[Path, str]]:
    """name -> (run dir in staging, a fragment its rejection reason must contain)."""
    cases: dict[str, tuple[Path, str]] = {}

    def run(name: str, run_id: str | None = None, run_type: str = "backtest") -> Path:
        return factory.make(staging / run_type, name if run_id is None else run_id, run_type)

    d = run("invalid-json")
    (d / "metadata.json").write_text('{"schema_version": 1, "run_id": ')
    cases["invalid JSON"] = (d, "metadata.json")

    d = run("fifo-parquet")
    (d / "results.parquet").unlink()
    os.mkfifo(d / "results.parquet")
    write_metadata(
        d, v1_metadata("fifo-parquet", "backtest", [artifact_entry("results.parquet", None, 20)])
    )
    cases["FIFO named x.parquet"] = (d, "FIFO")

    d = run("device-parquet")
    (d / "results.parquet").unlink()
    os.mknod(d / "results.parquet", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    write_metadata(
        d, v1_metadata("device-parquet", "backtest", [artifact_entry("results.parquet", None, 20)])
    )
    cases["device file named x.parquet"] = (d, "character device")

    d = run("passwd-link")
    (d / "results.parquet").unlink()
    (d / "results.parquet").symlink_to("/etc/passwd")
    data = Path("/etc/passwd").read_bytes()
    write_metadata(
        d, v1_metadata("passwd-link", "backtest", [artifact_entry("results.parquet", data, 20)])
    )
    cases["symlink to /etc/passwd"] = (d, "outside the artifacts root")

    d = run("dotdot-file")
    write_metadata(
        d,
        v1_metadata(
            "dotdot-file",
            "backtest",
            [artifact_entry("../../../etc/passwd", None, 20, name="results")],
        ),
    )
    cases["file with ../"] = (d, "..")

    d = run("absolute-file")
    write_metadata(
        d,
        v1_metadata(
            "absolute-file", "backtest", [artifact_entry("/etc/passwd", None, 20, name="results")]
        ),
    )
    cases["absolute file path"] = (d, "/etc/passwd")

    d = run(SQL_RUN_ID)
    cases["run_id with quotes, SQL, ; and a newline"] = (d, "run_id")

    d = run("metadata-dir")
    (d / "metadata.json").unlink()
    (d / "metadata.json").mkdir()
    cases["metadata.json is a directory"] = (d, "metadata.json is a directory")

    d = run("huge-metadata")
    with open(d / "metadata.json", "r+b") as fh:
        fh.truncate(50 * 1000 * 1000)  # 50 MB (sparse): the size is checked before reading
    cases["50 MB metadata.json"] = (d, "8 MiB")

    d = run("deep-json")
    (d / "metadata.json").write_text("[" * 100_000 + "]" * 100_000)
    cases["deeply nested JSON"] = (d, "nested")

    d = run("wrong-types")
    meta = v1_metadata("wrong-types", "backtest", [dict(factory.entry)])
    meta.update(status=7, params=[1, 2], metrics="fast", producer=None, created_at=12)
    write_metadata(d, meta)
    cases["wrong types everywhere"] = (d, "must be")

    bad_name = Path(os.fsdecode(os.fsencode(staging / "backtest") + b"/bad-\xff-name"))
    os.rename(run("bad-utf8-source"), bad_name)
    cases["non-UTF-8 directory name"] = (bad_name, "UTF-8")
    return cases


def test_hostile_runs_rejected_by_a_live_daemon(
    bus: Config,
    tmp_path: Path,
    run_factory: RunFactory,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    staging = tmp_path / "staging"
    cases = build_cases(staging, run_factory)
    d = daemon_factory(bus).start()

    # Drop each case into the live daemon, one rename each (the dup pair too).
    dropped: dict[str, tuple[Path, str]] = {}
    for name, (src, fragment) in cases.items():
        dest = Path(
            os.fsdecode(os.fsencode(bus.root) + os.fsencode(src)[len(os.fsencode(staging)) :])
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dest)
        dropped[name] = (dest, fragment)
    first = run_factory.make(bus.root / "backtest", "dup-1")
    wait_for(lambda: "dup-1" in live_run_ids(bus), "the first dup-1 registered")
    second = run_factory.make(bus.root / "optimize", "dup-1", run_type="optimize")
    dropped["duplicated run_id under two run types"] = (second, f"already registered from {first}")

    # Good runs behind them all.
    good = {f"good-{i:02d}" for i in range(20)}
    for run_id in sorted(good):
        run_factory.make(bus.root / "backtest", run_id)
    wait_for(lambda: good <= live_run_ids(bus), "the good runs after the hostile ones")

    # As stored: a non-UTF-8 name has its bad bytes as \xNN text (catalog.db_text).
    keys = {name: db_text(str(path)) for name, (path, _) in dropped.items()}

    def all_rejected() -> dict[str, str] | None:
        found = open_rejections(bus)
        return found if set(keys.values()) <= set(found) else None

    reasons = wait_for(all_rejected, "every hostile case rejected")
    for name, (_, fragment) in dropped.items():
        reason = reasons[keys[name]]
        assert fragment in reason, f"{name}: {reason!r} lacks {fragment!r}"
        assert len(reason) > 20, f"{name}: {reason!r} is not a reason a person can act on"

    # The same through the CLI's JSON contract (a reader process, while the daemon runs).
    done = run_cli(bus, "rejected", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = {row["run_dir"]: row for row in json.loads(done.stdout)}
    for name in dropped:
        assert rows[keys[name]]["reason"] == reasons[keys[name]], name

    # The catalog is intact (no input ever became SQL), and holds only the good runs + dup-1.
    assert live_run_ids(bus) == good | {"dup-1"}
    [(dup_dir,)] = snapshot_query(bus, "SELECT run_dir FROM catalog.runs_d WHERE run_id = 'dup-1'")
    assert dup_dir == str(first)
    assert d.alive()
    assert not d.events("worker.crashed") and not d.events("batch.failed")
    assert d.stop() == 0
    figures.update(
        {
            "hostile_cases": len(dropped),
            "rejected_with_reason": len(dropped),
            "good_runs_after": len(good),
            "daemon_crashes": 0,
        }
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_validator_property_suite_under_soak(figures: dict[str, Any]) -> None:
    """``make soak`` selects ``-m slow``, which the validator's property tests are not: run them
    here, in a subprocess with QUANTBOT_BUS_SOAK=1, and check hypothesis' own statistics that
    every property ran at least 5,000 passing examples without a failure."""
    hostile = Path(__file__).resolve().parents[1] / "test_contract_hostile_properties.py"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(hostile),
            "-k",
            "property",
            "--hypothesis-show-statistics",
        ],
        env={**CLEAN_ENV, "QUANTBOT_BUS_SOAK": "1"},
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # One block per property; a block has a line per phase (reuse: the examples hypothesis saved
    # in its database, then generate): the examples of all phases count.
    stats = []
    blocks = re.finditer(
        r"::(test_property_\w+):(.*?)(?=::test_property_|\Z)", done.stdout, flags=re.S
    )
    for block in blocks:
        phases = re.findall(r"(\d+) passing\D*?(\d+) failing", block.group(2))
        passed = sum(int(p) for p, _ in phases)
        failed = sum(int(f) for _, f in phases)
        stats.append((block.group(1), str(passed), str(failed)))
    assert len(stats) >= 4, done.stdout[-3000:]
    for name, passing, failing in stats:
        assert int(passing) >= 5000 and int(failing) == 0, (name, passing, failing)
    figures.update(
        {name: f"{passing} examples, {failing} failing" for name, passing, failing in stats}
    )
    figures["hypothesis_examples_total"] = sum(int(p) for _, p, _ in stats)
