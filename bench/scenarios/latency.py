"""Reader-visible latency: a producer writes runs at a steady rate while a reader process
polls the publication; the idle-latency scenario, and the helpers the catch-up scenario reuses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from quantbot_bus.config import Config

from .. import datagen
from ..common import (
    DaemonProc,
    Result,
    log_events,
    median,
    percentile,
    rss_mb,
    start_daemon,
    verdict,
    wait_until,
)
from .context import Ctx, _k
from .datasets import _settle, baseline_db, ensure_bus

LATENCY_TARGET = (60.0, 300.0)  # p50, p99 in ms


def _produce(ctx: Ctx, root: Path, prefix: str, rate: float, seconds: float) -> dict[str, float]:
    """Write runs at ``rate``/s for ``seconds``: data files first, metadata.json renamed last.
    Returns run_id -> time.time() right after the rename."""
    commits: dict[str, float] = {}
    n = int(rate * seconds)
    (root / datagen.RUN_TYPE).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for k in range(n):
        due = t0 + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        i = ctx.new_index()
        run_id = datagen.run_id_for(i, prefix)
        variant = ctx.tpl.variant_for(i)
        run_dir = root / datagen.RUN_TYPE / run_id
        run_dir.mkdir()
        for f in variant.files:
            ctx.tpl.link(f, run_dir / f"{f.name}.parquet")
        datagen.write_json_atomic(
            run_dir / "metadata.json", datagen.metadata_for(run_id, i, variant), fsync=True
        )
        commits[run_id] = time.time()
    return commits


def _reader(
    ctx: Ctx, path: Path, mode: str, prefix: str, expect: int, timeout: float
) -> tuple[subprocess.Popen[bytes], Path]:
    out = ctx.work / f"reader-{prefix}.json"
    ready = ctx.work / f"reader-{prefix}.ready"
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "bench.reader",
        "--path",
        str(path),
        "--mode",
        mode,
        "--prefix",
        prefix,
        "--expect",
        str(expect),
        "--out",
        str(out),
        "--interval",
        "0.005",
        "--timeout",
        str(timeout),
        "--ready-file",
        str(ready),
    ]
    proc = subprocess.Popen(
        cmd, cwd=str(Path(__file__).resolve().parents[2]), stdin=subprocess.DEVNULL
    )
    if not wait_until(ready.exists, 60, 0.05):
        proc.kill()
        raise RuntimeError("the reader process did not start")
    return proc, out


def _latencies(commits: dict[str, float], out: Path) -> dict[str, Any]:
    seen = json.loads(out.read_text())
    lat = [(seen["seen"][r] - t) * 1000 for r, t in commits.items() if r in seen["seen"]]
    missing = len(commits) - len(lat)
    res: dict[str, Any] = {
        "n": len(commits),
        "missing": missing,
        "polls": seen["polls"],
        "opens": seen["opens"],
        "reader_errors": seen["errors"],
        "reader_open_ms": seen.get("open_ms"),
    }
    if lat:
        res.update(
            p50_ms=round(percentile(lat, 50), 1),
            p90_ms=round(percentile(lat, 90), 1),
            p99_ms=round(percentile(lat, 99), 1),
            max_ms=round(max(lat), 1),
            min_ms=round(min(lat), 1),
        )
    return res


def _window_breakdown(log_path: Path, offset: int) -> dict[str, Any]:
    """What the daemon logged (debug level) after byte ``offset`` of its log: per batch (from
    its examine to its publication done, lock waits included), per publication, per export
    refresh (they share the 2 cores with the batches; before quantbot-bus 109a56e a refresh
    also held the Bus lock, so a batch waited for it)."""
    ev = log_events(
        log_path, "batch.published", "publication.published", "export.refreshed", offset=offset
    )

    def stats(name: str) -> dict[str, float] | None:
        xs = [float(e["ms"]) for e in ev if e.get("event") == name and "ms" in e]
        if not xs:
            return None
        return {
            "n": len(xs),
            "median_ms": round(median(xs), 1),
            "p99_ms": round(percentile(xs, 99), 1),
            "max_ms": round(max(xs), 1),
            "total_ms": round(sum(xs), 1),
        }

    return {
        "batch": stats("batch.published"),
        "publication": stats("publication.published"),
        "export_refresh": stats("export.refreshed"),
    }


def _breakdown_note(b: dict[str, Any]) -> str:
    parts = []
    if b.get("batch"):
        x = b["batch"]
        parts.append(f"{x['n']} batches: median {x['median_ms']:.0f} ms, max {x['max_ms']:.0f} ms")
    if b.get("publication"):
        x = b["publication"]
        parts.append(f"publications median {x['median_ms']:.0f} ms, max {x['max_ms']:.0f} ms")
    if b.get("export_refresh"):
        x = b["export_refresh"]
        parts.append(
            f"{x['n']} export refreshes median {x['median_ms']:.0f} ms, "
            f"max {x['max_ms']:.0f} ms, {x['total_ms'] / 1000:.1f}s in all"
        )
    return "; ".join(parts)


def _live(
    ctx: Ctx, d: DaemonProc, cfg: Config, prefix: str, rate: float, seconds: float
) -> dict[str, Any]:
    """A producer writes runs at ``rate``/s for ``seconds`` while a separate reader process
    polls ``exports/bus.duckdb``; the latencies, and what the daemon logged meanwhile."""
    expect = int(rate * seconds)
    offset = d.log_path.stat().st_size
    reader, out = _reader(ctx, cfg.snapshot_path, "snapshot", prefix, expect, seconds + 120)
    try:
        commits = _produce(ctx, cfg.root, prefix, rate, seconds)
        reader.wait(timeout=seconds + 180)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(10)
    d.check_alive()
    res = _latencies(commits, out)
    res["daemon_rss_mb"] = rss_mb(d.pid)
    res["breakdown"] = _window_breakdown(d.log_path, offset)
    return res


def _add_latency(ctx: Ctx, scenario: str, what: str, res: dict[str, Any], extra: str) -> None:
    p50, p99 = res.get("p50_ms"), res.get("p99_ms")
    t50, t99 = LATENCY_TARGET
    complete = res["missing"] == 0
    ctx.add(
        Result(
            scenario,
            f"p50 ({what})",
            p50,
            "ms",
            f"<= {t50:.0f} ms",
            verdict(p50 is not None and p50 <= t50 and complete),
            res,
            "rename of metadata.json -> a fresh read-only open of exports/bus.duckdb finds it "
            f"(5 ms polls); {extra}",
        )
    )
    ctx.add(
        Result(
            scenario,
            f"p99 ({what})",
            p99,
            "ms",
            f"<= {t99:.0f} ms",
            verdict(p99 is not None and p99 <= t99 and complete),
            {},
            f"max {res.get('max_ms')} ms, missing {res['missing']} of {res['n']}; reader open+query "
            f"median {(res.get('reader_open_ms') or {}).get('median')} ms; "
            + _breakdown_note(res["breakdown"]),
        )
    )


def _baseline_latency(ctx: Ctx, n: int, rate: float, seconds: float) -> dict[str, Any]:
    """The baseline on its own seed-style catalog of ``n`` runs, polling a root that holds only
    the new runs (the seed moved processed jobs out of its inbox); a reader process polls its
    ``runs.parquet`` as the seed's users read it."""
    db = baseline_db(ctx, n)
    bwork = ctx.work / f"baseline-live-{n}"
    live_db = bwork / "alerts.duckdb"
    bwork.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db, live_db)
    broot, bexp = bwork / "artifacts", bwork / "exports"
    broot.mkdir(exist_ok=True)
    bproc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.baseline",
            "--root",
            str(broot),
            "--db",
            str(live_db),
            "--exports",
            str(bexp),
        ],
        cwd=str(Path(__file__).resolve().parents[2]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # one run first so runs.parquet exists, then the timed producer
        _produce(ctx, broot, "warm", 1.0, 1.0)
        if not wait_until(lambda: (bexp / "runs.parquet").exists(), 60, 0.05):
            raise RuntimeError("the baseline wrote no runs.parquet")
        expect = int(rate * seconds)
        reader, out = _reader(ctx, bexp / "runs.parquet", "parquet", "blive", expect, seconds + 60)
        commits = _produce(ctx, broot, "blive", rate, seconds)
        reader.wait(timeout=seconds + 120)
    finally:
        bproc.terminate()
        bproc.wait(60)
    return _latencies(commits, out)


def latency_idle(ctx: Ctx) -> None:
    """An idle daemon on the small bus (exports caught up); one run every 0.5 s."""
    cfg = ensure_bus(ctx, "small")
    rate, seconds = 2.0, (10.0 if ctx.quick else 30.0)
    d = start_daemon(cfg, ctx.work, "latency-idle", log_level="debug")
    try:
        d.wait_ready(300)
        st = _settle(d, cfg, 60)  # let the startup export refresh finish: idle
        res = _live(ctx, d, cfg, "idle", rate, seconds)
        res["settle"] = st
    finally:
        d.stop()
    n = ctx.sizes["small"]
    _add_latency(
        ctx, "latency idle", f"1 run / 0.5 s, {_k(n)} catalog", res, "idle daemon, exports fresh"
    )
    b_seconds = 5.0 if ctx.quick else 10.0
    bres = _baseline_latency(ctx, n, rate, b_seconds)
    ctx.add(
        Result(
            "latency idle",
            f"baseline p50 (1 run / 0.5 s, {_k(n)})",
            bres.get("p50_ms"),
            "ms",
            "(reference)",
            "INFO",
            bres,
            f"p99 {bres.get('p99_ms')} ms over {bres['n']} runs; seed daemon, 1 s poll, reader "
            "polls its runs.parquet",
        )
    )
