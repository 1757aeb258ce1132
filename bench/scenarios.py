"""The benchmark scenarios. Each appends :class:`bench.common.Result` lines to the context.

Scale: ``--quick`` uses 1,000 runs where the full suite uses 10,000, 100 where it uses 1,000 and
2,000 where it uses 100,000. Shared data sets are built once and reused, in this order:

- ``main`` bus (10,000 runs): registered by the burst scenario's daemon, exports caught up; then
  used by query, growth (middle size) and export refresh (each adds a few runs);
- ``small`` bus (1,000 runs): registered by a second daemon burst (untimed), exports caught up;
  idle latency, growth (smallest size), export refresh;
- ``large`` bus (100,000 runs): 80,000 run dirs pre-seeded into the catalog and published once
  (the state a stopped daemon leaves), then 20,000 more dropped while no daemon runs, which the
  catch-up scenario's daemon registers; then latency at 100k, restart and growth (largest size).

``--only SCENARIO`` builds whatever that scenario needs.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbot_bus.config import Config

from . import baseline as bl
from . import datagen
from .common import (
    DaemonKilled,
    DaemonProc,
    Result,
    bus_config,
    cpu_percent,
    log_events,
    median,
    percentile,
    published_file_rows,
    read_status,
    rss_mb,
    start_daemon,
    verdict,
    visible_runs,
    wait_until,
    wait_visible,
)

IDLE_WINDOW_S = 5.0

#: The materialised leaderboard, as a user reads it.
LEADERBOARD_SQL = (
    "SELECT caller_name, calls, hit_2x_rate, median_peak_multiple, median_dd_bps, runs_seen "
    "FROM exports.caller_leaderboard ORDER BY hit_2x_rate DESC, calls DESC LIMIT 20"
)
#: The same question asked ad hoc over every consolidated row.
LEADERBOARD_RAW_SQL = (
    "SELECT caller_name, count(*) AS calls, avg(CAST(hit_2x AS DOUBLE)) AS hit_2x_rate, "
    "median(peak_multiple) AS median_peak, median(dd_bps) AS median_dd_bps "
    "FROM exports.backtest_call_path_metrics GROUP BY caller_name "
    "ORDER BY hit_2x_rate DESC LIMIT 20"
)

LATENCY_TARGET = (60.0, 300.0)  # p50, p99 in ms
#: One run at a time in growth: the pause between two (an idle daemon's pace, not a burst).
REP_SPACING_S = 0.25


@dataclass
class Ctx:
    quick: bool
    work: Path
    say: Callable[[str], None]
    results: list[Result] = field(default_factory=list)
    buses: dict[str, Config] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    baseline_dbs: dict[int, Path] = field(default_factory=dict)
    failed_bursts: dict[str, dict[str, Any]] = field(default_factory=dict)
    large_state: dict[str, Any] = field(default_factory=dict)
    next_index: int = 5_000_000  # run indices for runs added by scenarios (unique ids)
    _tpl: datagen.Template | None = None

    @property
    def n_main(self) -> int:
        return 1_000 if self.quick else 10_000

    @property
    def n_small(self) -> int:
        return 100 if self.quick else 1_000

    @property
    def n_large(self) -> int:
        return 2_000 if self.quick else 100_000

    @property
    def n_drop(self) -> int:
        """Runs of the large bus dropped on the stopped daemon (the rest are pre-seeded)."""
        return 500 if self.quick else 20_000

    @property
    def tpl(self) -> datagen.Template:
        if self._tpl is None:
            self._tpl = datagen.make_template(self.work / "template")
        return self._tpl

    def add(self, result: Result) -> None:
        self.results.append(result)
        self.say(result.line())

    def new_index(self) -> int:
        self.next_index += 1
        return self.next_index


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


# --- data sets ------------------------------------------------------------------------------


def _burst(
    ctx: Ctx,
    label: str,
    n: int,
    *,
    timeout: float,
    exports_timeout: float = 300.0,
    measure_idle: bool = False,
) -> dict[str, Any]:
    """Make ``n`` runs, start the daemon on them, time READY and the moment a reader finds every
    run in ``exports/bus.duckdb``; then (untimed for the figure) wait until the exports hold
    them all (``runs.parquet`` of the current generation).

    On success the bus becomes ``ctx.buses[label]``; if the daemon dies (or the RSS guard kills
    it) the result says so and the bus is not reused."""
    cfg = bus_config(ctx.work / f"bus-{label}")
    t = time.perf_counter()
    datagen.make_runs(cfg.root, ctx.tpl, n)
    gen_s = time.perf_counter() - t
    ctx.say(f"  [{label}] {n:,} run dirs made in {gen_s:.1f}s; starting the daemon")
    d = start_daemon(cfg, ctx.work, f"burst-{label}")
    out: dict[str, Any] = {"n": n, "gen_s": round(gen_s, 2), "exports_fresh": False, "error": None}
    try:
        t_vis = wait_visible(d, cfg, n, timeout)
        if t_vis is None:
            raise RuntimeError(f"only {visible_runs(cfg)} of {n} visible after {timeout:.0f}s")
        out["visible_s"] = t_vis - d.started
        out["ready_s"] = d.wait_ready(timeout)
        out["rss_at_visible_mb"] = rss_mb(d.pid)
        out["exports_fresh"] = d.wait(
            lambda: (published_file_rows(cfg) or 0) >= n, exports_timeout, 0.25
        )
        out["exports_s"] = (time.perf_counter() - d.started) if out["exports_fresh"] else None
        out["exported_rows"] = published_file_rows(cfg)
        if measure_idle and out["exports_fresh"]:
            out["settle"] = _settle(d, cfg, 60)
            out["rss_mb"] = rss_mb(d.pid)
            out["idle_cpu_pct"] = cpu_percent(d.pid, IDLE_WINDOW_S)
    except (DaemonKilled, RuntimeError) as exc:
        out["error"] = str(exc)
        out["exported_rows"] = published_file_rows(cfg)
    finally:
        out["exit_code"] = d.stop(timeout=60)
        out["peak_rss_mb"] = round(d.peak_rss_mb, 1)
    if out["error"] is None:  # every run visible; the exports may not be (see the notes)
        ctx.buses[label] = cfg
        ctx.sizes[label] = n
    if not out["exports_fresh"]:
        ctx.say(f"  [{label}] WARNING: the exports hold {out.get('exported_rows')} of {n:,} runs")
    return out


def _trickle(ctx: Ctx, label: str, n: int, chunk: int = 500) -> Config:
    """Build a bus the way it grows in use: runs arrive ``chunk`` at a time while the daemon
    runs, each chunk once the exports caught up with the previous one (untimed set-up)."""
    cfg = bus_config(ctx.work / f"bus-{label}-trickle")
    d = start_daemon(cfg, ctx.work, f"trickle-{label}")
    try:
        d.wait_ready(120)
        for start in range(0, n, chunk):
            datagen.make_runs(cfg.root, ctx.tpl, min(chunk, n - start), start=start)
            want = min(n, start + chunk)
            if not d.wait(lambda w=want: (published_file_rows(cfg) or 0) >= w, 600, 0.25):
                raise RuntimeError(f"exports never reached {want} runs")
        ctx.say(
            f"  [{label}] built by trickle: {n:,} runs, daemon peak RSS {d.peak_rss_mb:,.0f} MB"
        )
    finally:
        d.stop(timeout=60)
    ctx.buses[label] = cfg
    ctx.sizes[label] = n
    return cfg


def ensure_bus(ctx: Ctx, label: str) -> Config:
    """The ``main``/``small`` bus registered by a real daemon, exports fresh unless a warning
    said otherwise (built if missing: by a burst, or — when the daemon of a burst of that size
    died — by trickling runs in)."""
    if label not in ctx.buses:
        n = ctx.n_main if label == "main" else ctx.n_small
        if label not in ctx.failed_bursts:
            ctx.say(f"  building the {label} bus ({n:,} runs) with the daemon")
            res = _burst(ctx, label, n, timeout=600)
            if res["error"]:
                ctx.failed_bursts[label] = res
            elif res["exports_fresh"]:
                ctx.say(
                    f"  [{label}] visible after {res['visible_s']:.1f}s, exports fresh after "
                    f"{res['exports_s']:.1f}s"
                )
        if label not in ctx.buses:
            _trickle(ctx, label, n)
    return ctx.buses[label]


def _prepare_large(ctx: Ctx) -> Config:
    """The large bus as a stopped daemon leaves it, plus runs dropped meanwhile: ``n_large -
    n_drop`` run dirs pre-seeded into the catalog (:func:`datagen.preseed_catalog`) and
    published once through :class:`quantbot_bus.pipeline.Bus` (the base generation), then
    ``n_drop`` new run dirs that no daemon has seen."""
    from quantbot_bus.pipeline import Bus

    if "cfg" in ctx.large_state:
        return ctx.large_state["cfg"]
    n, drop = ctx.n_large, ctx.n_drop
    hist = n - drop
    cfg = bus_config(ctx.work / "bus-large")
    t = time.perf_counter()
    datagen.make_runs(cfg.root, ctx.tpl, hist)
    gen_s = time.perf_counter() - t
    with Bus.open(cfg, role="sync") as bus:
        assert bus.catalog is not None
        seed_s = datagen.preseed_catalog(bus.catalog, cfg.root, ctx.tpl, 0, hist)
        t = time.perf_counter()
        pub = bus.publish(force=True)
        pub_s = time.perf_counter() - t
    t = time.perf_counter()
    datagen.make_runs(cfg.root, ctx.tpl, drop, start=hist)
    drop_s = time.perf_counter() - t
    assert pub is not None
    ctx.large_state.update(
        cfg=cfg,
        history=hist,
        gen_s=round(gen_s, 1),
        seed_s=round(seed_s, 1),
        base_publish_s=round(pub_s, 2),
        base_publish_bytes=pub.bytes_written,
        base_publish_rows=pub.rows,
        drop_gen_s=round(drop_s, 1),
    )
    ctx.say(
        f"  [large] {hist:,} run dirs in {gen_s:.1f}s, pre-seeded in {seed_s:.1f}s, base "
        f"generation published in {pub_s:.2f}s ({pub.rows:,} rows, {_mb(pub.bytes_written)}); "
        f"{drop:,} more dropped in {drop_s:.1f}s"
    )
    return cfg


def ensure_large(ctx: Ctx) -> Config:
    """The large bus with every run registered (the catch-up done, untimed if not measured)."""
    if "caught_up" not in ctx.large_state:
        cfg = _prepare_large(ctx)
        d = start_daemon(cfg, ctx.work, "large-setup")
        try:
            if wait_visible(d, cfg, ctx.n_large, 1800) is None:
                raise RuntimeError("the large bus never showed every run")
        finally:
            d.stop(timeout=10)
        ctx.large_state["caught_up"] = True
        ctx.buses["large"] = cfg
        ctx.sizes["large"] = ctx.n_large
    return ctx.large_state["cfg"]


def baseline_db(ctx: Ctx, n: int) -> Path:
    """A seed-style catalog with ``n`` runs pre-seeded (one Arrow insert per table)."""
    if n in ctx.baseline_dbs:
        return ctx.baseline_dbs[n]
    db = ctx.work / f"baseline-{n}" / "alerts.duckdb"
    root = ctx.work / "baseline-seeded-runs"  # paths only; the baseline never re-reads them
    runs = []
    for i in range(n):
        rid = datagen.run_id_for(i)
        runs.append(
            (rid, root / "backtest" / rid, datagen.metadata_for(rid, i, ctx.tpl.variant_for(i)))
        )
    secs = bl.preseed(db, runs)
    ctx.say(f"  baseline catalog with {n:,} runs pre-seeded in {secs:.1f}s")
    ctx.baseline_dbs[n] = db
    return db


def _new_run(ctx: Ctx, cfg: Config, prefix: str = "add") -> Path:
    return datagen.make_run(cfg.root, ctx.tpl, ctx.new_index(), prefix=prefix)


def _export_status(cfg: Config) -> dict[str, Any]:
    try:
        data = json.loads((cfg.exports_dir / "_export_status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _settle(d: DaemonProc, cfg: Config, timeout: float) -> dict[str, Any]:
    """Wait until the exports are fresh (``runs.parquet`` of the current generation holds every
    registered run) and the daemon is idle (CPU < 2% over two consecutive seconds), at most
    ``timeout`` seconds."""
    t0 = time.perf_counter()
    fresh = idle = False
    quiet = 0
    while time.perf_counter() - t0 < timeout:
        d.check_alive()
        registered = read_status(cfg).get("registered") or 0
        fresh = registered > 0 and (published_file_rows(cfg) or 0) >= registered
        try:
            quiet = quiet + 1 if cpu_percent(d.pid, 1.0) < 2.0 else 0
        except OSError:
            d.check_alive()
            raise
        idle = quiet >= 2
        if fresh and idle:
            break
    return {
        "settle_s": round(time.perf_counter() - t0, 1),
        "exports_fresh": fresh,
        "idle": idle,
        "exported_rows": published_file_rows(cfg),
        "registered": read_status(cfg).get("registered"),
    }


# --- burst --------------------------------------------------------------------------------------


def burst(ctx: Ctx) -> None:
    n = ctx.n_main
    window = 3.0 if ctx.quick else 20.0
    res = _burst(ctx, "main", n, timeout=900, measure_idle=True)
    if res["error"]:
        ctx.failed_bursts["main"] = res
    vis = res.get("visible_s")
    rate = n / vis if vis else None
    peak = f"daemon peak RSS {res['peak_rss_mb']:,.0f} MB"

    # The baseline on the same runs, over a fixed window (running it to the end would take long).
    bdir = ctx.work / "baseline-burst"
    daemon = bl.BaselineDaemon(
        ctx.work / "bus-main" / "artifacts", bdir / "alerts.duckdb", bdir / "exports"
    )
    t0 = time.perf_counter()
    daemon.run(max_seconds=window)
    took = time.perf_counter() - t0
    done = daemon.processed
    b_rate = len(done) / (done[-1].finished - done[0].started) if len(done) > 1 else 0.0
    ratio = rate / b_rate if (b_rate and rate) else None
    ctx.add(
        Result(
            "burst",
            f"{_k(n)} runs: start -> visible to readers",
            rate,
            "runs/s",
            ">= 1,000 runs/s",
            verdict(rate is not None and rate >= 1000),
            res,
            (
                f"{vis:.2f}s from Popen until exports/bus.duckdb shows all {n:,} in "
                f"catalog.runs_d (READY at {res['ready_s']:.2f}s); {peak}"
            )
            if vis
            else f"never visible: {res['error'] or 'timed out'}; {peak}",
        )
    )
    ctx.add(
        Result(
            "burst",
            "baseline (seed daemon) throughput",
            b_rate,
            "runs/s",
            "(reference)",
            "INFO",
            {
                "window_s": round(took, 2),
                "processed": len(done),
                "per_run_ms_median": median([p.ms for p in done]) if done else None,
                "estimated_s_for_all": round(n / b_rate, 1) if b_rate else None,
            },
            f"{len(done)} runs in a {window:.0f}s window; all {n:,} would take >= {n / b_rate:,.0f}s"
            if b_rate
            else "baseline processed nothing",
        )
    )
    ctx.add(
        Result(
            "burst",
            "speed-up vs baseline",
            ratio,
            "x",
            ">= 50x",
            verdict(ratio is not None and ratio >= 50),
            {},
            "same runs, same machine, this run; the baseline's rate is taken on an almost empty "
            "catalog (it only slows as history grows), so the ratio is conservative",
        )
    )
    exp_s = res.get("exports_s")
    ctx.add(
        Result(
            "burst",
            f"{_k(n)} runs: start -> exports hold them all",
            n / exp_s if exp_s else None,
            "runs/s",
            "(reference)",
            "INFO",
            {},
            f"{exp_s:.1f}s until runs.parquet of the current generation has {n:,} rows "
            "(consolidated tables, summaries)"
            if exp_s
            else f"exports not caught up: {res.get('exported_rows')} of {n:,}",
        )
    )
    if res.get("rss_mb"):
        st = res.get("settle", {})
        ctx.add(
            Result(
                "burst",
                f"daemon RSS at {_k(n)}, idle",
                res["rss_mb"].get("VmRSS"),
                "MB",
                "(reference)",
                "INFO",
                {},
                f"after the exports caught up and {st.get('settle_s')}s of settling; "
                f"CPU {res.get('idle_cpu_pct', float('nan')):.1f}% over {IDLE_WINDOW_S:.0f}s; "
                f"peak (VmHWM) {res['rss_mb'].get('VmHWM', 0):,.0f} MB",
            )
        )


# --- query --------------------------------------------------------------------------------------


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "quantbot-bus"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "quantbot_bus.cli"]


def _time_cmd(
    cmd: list[str], cwd: Path, reps: int
) -> tuple[list[float], subprocess.CompletedProcess[bytes]]:
    times = []
    proc = None
    for _ in range(reps + 1):  # the first one warms the page cache and is dropped
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=120)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            break
    assert proc is not None
    return times[1:] or times, proc


def query(ctx: Ctx) -> None:
    cfg = ensure_bus(ctx, "main")
    reps = 3 if ctx.quick else 7
    where = [
        "--root",
        str(cfg.root),
        "--exports-dir",
        str(cfg.exports_dir),
        "--state-dir",
        str(cfg.state_dir),
    ]
    cases = [
        (
            "runs --run-type backtest --limit 50",
            [
                *_cli(),
                "runs",
                "--run-type",
                "backtest",
                "--limit",
                "50",
                "--format",
                "json",
                *where,
            ],
        ),
        (
            "query <caller_leaderboard>",
            [*_cli(), "query", LEADERBOARD_SQL, "--format", "json", *where],
        ),
        (
            "query <leaderboard over all rows>",
            [*_cli(), "query", LEADERBOARD_RAW_SQL, "--format", "json", *where],
        ),
    ]
    for label, cmd in cases:
        times, proc = _time_cmd(cmd, ctx.work, reps)
        if proc.returncode != 0:
            ctx.add(
                Result(
                    "query",
                    label,
                    None,
                    "s",
                    "<= 0.3 s",
                    "ERROR",
                    {"cmd": cmd},
                    f"exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-300:]}",
                )
            )
            continue
        rows = _count_json_rows(proc.stdout)
        med = median(times)
        ctx.add(
            Result(
                "query",
                f"{label} ({_k(ctx.sizes['main'])})",
                med,
                "s",
                "<= 0.3 s",
                verdict(med <= 0.3),
                {"times_s": [round(x, 3) for x in times], "rows": rows},
                f"whole fresh process, median of {len(times)} (max {max(times):.2f}s); {rows} rows",
            )
        )


def _count_json_rows(out: bytes) -> int | None:
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    if isinstance(doc, list):
        return len(doc)
    if isinstance(doc, dict):
        for key in ("rows", "runs", "data"):
            if isinstance(doc.get(key), list):
                return len(doc[key])
    return None


# --- reader-visible latency ----------------------------------------------------------------------


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
        cmd, cwd=str(Path(__file__).resolve().parent.parent), stdin=subprocess.DEVNULL
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
        cwd=str(Path(__file__).resolve().parent.parent),
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


# --- catch-up at 100k (+ idle, memory, latency under a stream) ---------------------------------


def catch_up(ctx: Ctx) -> None:
    """Runs dropped while the daemon was stopped: start it, time until a reader sees them all;
    then whether it goes idle within 30 s, its RSS, and the latency of a 10 runs/s stream."""
    cfg = _prepare_large(ctx)
    n, drop = ctx.n_large, ctx.n_drop
    hist = ctx.large_state["history"]
    window = 30
    d = start_daemon(cfg, ctx.work, "large-catchup", log_level="debug")
    res: dict[str, Any] = {}
    try:
        t_vis = wait_visible(d, cfg, n, 1800, interval=0.05)
        if t_vis is None:
            raise RuntimeError(f"only {visible_runs(cfg)} of {n} runs visible after 1800s")
        vis_s = t_vis - d.started
        ready_s = d.wait_ready(60)
        rss_visible = rss_mb(d.pid)
        ctx.large_state["caught_up"] = True
        ctx.buses["large"] = cfg
        ctx.sizes["large"] = n
        # Then: sample the CPU each second until it was < 1% for two seconds in a row, at most
        # `window` seconds.
        samples: list[float] = []
        idle_at = None
        while len(samples) < window:
            samples.append(round(cpu_percent(d.pid, 1.0), 1))
            d.check_alive()
            if len(samples) >= 2 and samples[-1] < 1.0 and samples[-2] < 1.0:
                idle_at = len(samples)
                break
        last5 = statistics.fmean(samples[-5:])
        mem = rss_mb(d.pid)
        exported = published_file_rows(cfg)
        status = _export_status(cfg)
        rescan = log_events(d.log_path, "rescan.done")
        res.update(
            visible_s=round(vis_s, 2),
            ready_s=round(ready_s, 2),
            rss_at_visible=rss_visible,
            cpu_samples=samples,
            idle_at_s=idle_at,
            rss=mem,
            exported_rows=exported,
            exports_more=status.get("more"),
            startup_rescan_ms=rescan[0].get("ms") if rescan else None,
            large=dict((k, v) for k, v in ctx.large_state.items() if k != "cfg"),
        )
        rate = drop / vis_s
        ctx.add(
            Result(
                "catch-up",
                f"{_k(drop)} dropped on a stopped daemon ({_k(n)} catalog)",
                rate,
                "runs/s",
                ">= 1,000 runs/s",
                verdict(rate >= 1000),
                res,
                f"{vis_s:.1f}s from Popen until exports/bus.duckdb shows all {n:,} (READY at "
                f"{ready_s:.1f}s; startup rescan {res['startup_rescan_ms']} ms); the other "
                f"{hist:,} were pre-seeded and published before the stop",
            )
        )
        progress = (
            f"exports hold {exported or 0:,} of {n:,} runs (catching up: {status.get('more')})"
        )
        ctx.add(
            Result(
                "catch-up",
                "then idle (CPU < 1% for 2 s) after",
                idle_at,
                "s",
                f"<= {window} s, CPU ~0",
                verdict(idle_at is not None),
                {},
                (
                    f"idle {idle_at}s after all were visible"
                    if idle_at
                    else f"not idle within {window}s: CPU {last5:.0f}% over its last 5 s"
                )
                + f"; {progress}",
            )
        )
        rss = mem.get("VmRSS", float("nan"))
        ctx.add(
            Result(
                "catch-up",
                f"daemon RSS at {_k(n)}",
                rss,
                "MB",
                "<= 200 MB",
                verdict(rss <= 200),
                {},
                f"{len(samples)}s after the catch-up; {rss_visible.get('VmRSS', 0):,.0f} MB when all were "
                f"visible; peak (VmHWM) {mem.get('VmHWM', 0):,.0f} MB; {progress}",
            )
        )
        # A steady 10 runs/s stream on the same daemon (its export backlog still running).
        seconds = 10.0 if ctx.quick else 30.0
        before = published_file_rows(cfg) or 0
        lat = _live(ctx, d, cfg, "l100k", 10.0, seconds)
        after = published_file_rows(cfg) or 0
        lat["exported_rows"] = [before, after]
        _add_latency(
            ctx,
            "latency 100k",
            f"10 runs/s for {seconds:.0f}s, {_k(n)} catalog",
            lat,
            f"default config; the exports held {before:,} of {n:,} runs before, {after:,} after "
            "(the catch-up of the history runs goes on meanwhile)"
            if before < n
            else "default config; exports caught up before",
        )
    finally:
        d.stop(timeout=10)
    # The same stream with the export refresh kept out of the way (registration + publication
    # only): export_interval_s set beyond the daemon's lifetime, so its publisher never starts a
    # refresh (its first one waits export_interval_s after boot).
    env = {"QUANTBOT_BUS_EXPORT_INTERVAL_S": str(round(time.monotonic() + 3_600))}
    d = start_daemon(cfg, ctx.work, "large-noexports", log_level="debug", env_extra=env)
    try:
        d.wait_ready(300)
        seconds = 5.0 if ctx.quick else 20.0
        lat = _live(ctx, d, cfg, "q100k", 10.0, seconds)
    finally:
        d.stop(timeout=10)
    p50, p99 = lat.get("p50_ms"), lat.get("p99_ms")
    ctx.add(
        Result(
            "latency 100k",
            f"p50 / p99, exports deferred ({_k(n)})",
            p50,
            "ms",
            "(reference)",
            "INFO",
            lat,
            f"p99 {p99} ms, max {lat.get('max_ms')} ms, missing {lat['missing']} of {lat['n']}; "
            "the registration path alone (no export refresh competes); "
            + _breakdown_note(lat["breakdown"]),
        )
    )


# --- restart -------------------------------------------------------------------------------------


def restart(ctx: Ctx) -> None:
    """Start -> READY on the large bus (every run registered and published before)."""
    cfg = ensure_large(ctx)
    n = ctx.sizes["large"]
    reps = 3
    # Each start also resumes the export catch-up of the history runs in the background, so a
    # stop that does not come within 10 s is finished with SIGKILL (which the daemon is built to
    # survive) and counted in the details.
    times, rescans, kills = [], [], 0
    for i in range(reps):
        d = start_daemon(cfg, ctx.work, f"large-restart-{i}")
        try:
            times.append(d.wait_ready(300))
        finally:
            code = d.stop(timeout=10)
            kills += code == -9
        ev = log_events(d.log_path, "rescan.done")
        rescans.append(ev[0].get("ms") if ev else None)
    med = median(times)
    ctx.add(
        Result(
            "restart",
            f"{_k(n)} registered: start -> READY",
            med,
            "s",
            "<= 3 s",
            verdict(med <= 3.0),
            {
                "times_s": [round(x, 3) for x in times],
                "startup_rescan_ms": rescans,
                "sigkilled_stops": kills,
            },
            f"median of {reps} restarts ({', '.join(f'{x:.2f}' for x in times)} s); their startup "
            f"rescans {', '.join(str(x) for x in rescans)} ms",
        )
    )


# --- growth: the registration path per run, 1k -> 100k -----------------------------------------


def _exports_files(cfg: Config) -> dict[int, tuple[str, int, int, int]]:
    """inode -> (path below exports/, size, mtime_ns, bytes allocated) of every file under
    ``exports/``."""
    out: dict[int, tuple[str, int, int, int]] = {}
    base = cfg.exports_dir
    for dirpath, _dirs, files in os.walk(base):
        for f in files:
            path = os.path.join(dirpath, f)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            out[st.st_ino] = (
                os.path.relpath(path, base),
                st.st_size,
                st.st_mtime_ns,
                st.st_blocks * 512,
            )
    return out


def _written_since(
    before: dict[int, tuple[str, int, int, int]], after: dict[int, tuple[str, int, int, int]]
) -> dict[str, int]:
    """Bytes of the files under ``exports/`` that are new or were rewritten (an inode not seen
    before, or another size or mtime), by kind: catalog segments, views files, other; and
    ``allocated``, what they take on disk (views files are sparse)."""
    out = {"catalog": 0, "views": 0, "other": 0, "allocated": 0}
    for ino, (rel, size, mtime, alloc) in after.items():
        old = before.get(ino)
        if old is not None and old[1:3] == (size, mtime):
            continue
        if "/catalog/" in f"/{rel}":
            kind = "catalog"
        elif rel.endswith(".duckdb"):
            kind = "views"
        else:
            kind = "other"
        out[kind] += size
        out["allocated"] += alloc
    return out


def _timed(record: list[float], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, appending how long each call took (ms) to ``record``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record.append((time.perf_counter() - t) * 1000)

    return wrapper


def _register_cost(ctx: Ctx, cfg: Config, reps: int) -> dict[str, Any]:
    """Per-run cost of the daemon's path with the catalog at its size, in this process through
    :class:`quantbot_bus.pipeline.Bus` (daemon stopped): ``examine`` (validate) + ``commit``
    (``apply_batch`` in one transaction, then the publication), one new run at a time
    (:data:`REP_SPACING_S` apart, after an untimed warm-up); and the bytes each publication
    added on disk (files under ``exports/`` not there or different before: the catalog
    segments, its views file, the manifest).

    The Bus is opened with the daemon's role, so the publication works as in the daemon: the
    next generation (links + views file) is made ahead by a background thread after each
    publication, off the path to readers; its time is reported apart (``prepare_ms``)."""
    from quantbot_bus.pipeline import Bus

    with Bus.open(cfg, role="daemon") as bus:
        assert bus.catalog is not None
        first = bus.publish(force=True)  # this process's first generation (untimed)
        # Untimed warm-up, as in a running daemon (the first publications of a process list
        # the export tables and make the next generation ahead).
        for _ in range(2):
            bus.commit(bus.examine([_new_run(ctx, cfg)]).batch)
            time.sleep(REP_SPACING_S)
        pubs: list[Any] = []
        apply_ms: list[float] = []
        prepare_ms: list[float] = []
        publish = bus.publication.publish

        def recording(*args: Any, **kwargs: Any) -> Any:
            p = publish(*args, **kwargs)
            pubs.append(p)
            return p

        bus.publication.publish = recording  # type: ignore[method-assign]
        bus.catalog.apply_batch = _timed(apply_ms, bus.catalog.apply_batch)  # type: ignore[method-assign]
        prepare = getattr(bus.publication, "_prepare_next", None)
        if prepare is not None:  # the made-ahead step (internal; only timed when present)
            bus.publication._prepare_next = _timed(prepare_ms, prepare)  # type: ignore[method-assign]
        parts: dict[str, list[float]] = {
            "examine": [],
            "apply": [],
            "publish": [],
            "swap": [],
            "total": [],
            "bytes": [],
            "segment_bytes": [],
            "views_bytes": [],
            "other_bytes": [],
            "allocated_bytes": [],
        }
        prev = _exports_files(cfg)
        for _ in range(reps):
            run_dir = _new_run(ctx, cfg)
            pubs.clear()
            apply_ms.clear()
            t0 = time.perf_counter()
            outcome = bus.examine([run_dir])
            t1 = time.perf_counter()
            result = bus.commit(outcome.batch)
            t2 = time.perf_counter()
            assert result.registered and bus.degraded is None, (outcome, result, bus.degraded)
            assert pubs and pubs[-1] is not None, "commit published nothing"
            pub = pubs[-1]
            # the pause between two runs; then what this publication (and the generation made
            # ahead after it) wrote
            time.sleep(REP_SPACING_S)
            cur = _exports_files(cfg)
            new = _written_since(prev, cur)
            prev = cur
            parts["examine"].append((t1 - t0) * 1000)
            parts["apply"].append(apply_ms[-1])
            parts["publish"].append((t2 - t1) * 1000 - apply_ms[-1])
            parts["swap"].append(pub.ms)
            parts["total"].append((t2 - t0) * 1000)
            parts["bytes"].append(float(new["catalog"] + new["views"] + new["other"]))
            parts["allocated_bytes"].append(float(new["allocated"]))
            parts["segment_bytes"].append(float(pub.bytes_written))
            parts["views_bytes"].append(float(new["views"]))
            parts["other_bytes"].append(float(new["other"]))
        counts = bus.counts()
    out: dict[str, Any] = {k: round(median(v), 2) for k, v in parts.items()}
    out["prepare_ms"] = round(median(prepare_ms), 1) if prepare_ms else None
    out["total_all_ms"] = [round(x, 1) for x in parts["total"]]
    out["bytes_all"] = [int(x) for x in parts["bytes"]]
    out["bytes_max"] = int(max(parts["bytes"]))
    out["runs"] = counts.get("runs")
    out["first_publish"] = None if first is None else first.__dict__
    return out


def _baseline_cost(ctx: Ctx, n: int, reps: int) -> dict[str, Any]:
    db = baseline_db(ctx, n)
    work = db.parent
    root = work / "artifacts"
    d = bl.BaselineDaemon(root, db, work / "exports")
    d.load_seen()
    ms = []
    for _ in range(reps):
        run_dir = datagen.make_run(root, ctx.tpl, ctx.new_index(), prefix="base")
        done = d.process_one(run_dir)
        assert done is not None
        ms.append(done.ms)
    return {"median_ms": round(median(ms), 1), "ms": [round(x, 1) for x in ms]}


def growth(ctx: Ctx) -> None:
    """Per-run cost of the registration path (examine + commit incl. publication) on the
    daemon-built buses of growing size, one new run at a time; the baseline's per-run cost on
    seed-style catalogs of the same sizes."""
    reps = 5 if ctx.quick else 8
    labels = ["small", "main", "large"]
    ours: dict[str, dict[str, Any]] = {}
    theirs: dict[str, dict[str, Any]] = {}
    for label in labels:
        cfg = ensure_large(ctx) if label == "large" else ensure_bus(ctx, label)
        n = ctx.sizes[label]
        ours[label] = o = _register_cost(ctx, cfg, reps)
        theirs[label] = t = _baseline_cost(ctx, n, max(3, reps // 2))
        ctx.add(
            Result(
                "growth",
                f"per-run cost at {_k(n)} registered",
                o["total"],
                "ms",
                "(see ratio)",
                "INFO",
                o,
                f"examine {o['examine']} + apply {o['apply']} + publish {o['publish']} ms "
                f"(median of {reps}; {o['runs']:,} runs; next generation made ahead off the "
                f"path: {o['prepare_ms']} ms); baseline {t['median_ms']} ms/run "
                f"({1000 / t['median_ms']:.1f} runs/s)",
            )
        )
    lo, hi = labels[0], labels[-1]
    ratio = ours[hi]["total"] / ours[lo]["total"]
    b_ratio = theirs[hi]["median_ms"] / theirs[lo]["median_ms"]
    nlo, nhi = _k(ctx.sizes[lo]), _k(ctx.sizes[hi])
    ctx.add(
        Result(
            "growth",
            f"ratio {nhi}/{nlo}",
            ratio,
            "x",
            "<= 1.3",
            verdict(ratio <= 1.3),
            {"baseline_ratio": round(b_ratio, 2)},
            f"baseline ratio {b_ratio:.1f}x (same run)",
        )
    )
    big = ours[hi]
    ctx.add(
        Result(
            "growth",
            f"bytes per published batch of 1 run at {nhi}",
            big["bytes_max"] / 1e6,
            "MB",
            "<= 1 MB",
            verdict(big["bytes_max"] <= 1_000_000),
            {"bytes_all": big["bytes_all"]},
            f"largest of {reps} publications (median {_mb(big['bytes'])}): new or rewritten "
            f"files under exports/; medians: catalog segments {_mb(big['segment_bytes'])} "
            f"(Published.bytes_written), views file {_mb(big['views_bytes'])}, other "
            f"(manifest) {_mb(big['other_bytes'])}; {_mb(big['allocated_bytes'])} allocated on "
            "disk (sparse views file); the rest are hard links",
        )
    )


# --- export refresh (reference) ------------------------------------------------------------------


def _refresh_cost(ctx: Ctx, cfg: Config, reps: int) -> dict[str, Any]:
    """Through :class:`quantbot_bus.pipeline.Bus` in this process (daemon stopped): register
    one new run (commit + publication), then time what the daemon's publisher does for it:
    ``refresh_exports`` (state, segments, views), the publication of the
    refreshed export tables, and ``write_files`` forced (the whole summary files, which the
    daemon writes at most once per ``FILE_WRITE_SPACING`` x their cost). Then the leaderboard
    in-process on a warm read-only connection to the publication."""
    from quantbot_bus.catalog import open_reader
    from quantbot_bus.pipeline import Bus

    with Bus.open(cfg, role="sync") as bus:
        t = time.perf_counter()
        while bus.refresh_exports().get("more"):  # bring the exports up to date (untimed)
            pass
        bus.publish(force=True)
        bus.write_files(force=True)
        catchup = time.perf_counter() - t
        refresh, publish, files = [], [], []
        for _ in range(reps):
            run_dir = _new_run(ctx, cfg)
            bus.commit(bus.examine([run_dir]).batch)
            t = time.perf_counter()
            status = bus.refresh_exports()
            refresh.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            bus.publish()
            publish.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            bus.write_files(force=True)
            files.append((time.perf_counter() - t) * 1000)
        assert bus.degraded is None, bus.degraded
    bad = [
        name
        for name, st in (_export_status(cfg).get("exports") or {}).items()
        if isinstance(st, dict) and st.get("ok") is False
    ]
    query_ms: dict[str, float] = {}
    con = open_reader(cfg.snapshot_path)
    try:
        for label, sql in (("materialised", LEADERBOARD_SQL), ("all rows", LEADERBOARD_RAW_SQL)):
            con.execute(sql).fetchall()  # warm-up
            qt = []
            for _ in range(reps):
                t = time.perf_counter()
                con.execute(sql).fetchall()
                qt.append((time.perf_counter() - t) * 1000)
            query_ms[label] = median(qt)
    finally:
        con.close()
    return {
        "refresh_ms": [round(x, 1) for x in refresh],
        "refresh_median_ms": median(refresh),
        "refresh_max_ms": max(refresh),
        "publish_ms": [round(x, 1) for x in publish],
        "publish_median_ms": median(publish),
        "files_ms": [round(x, 1) for x in files],
        "files_median_ms": median(files),
        "catchup_s": round(catchup, 2),
        "failed": bad,
        "status_ms": status.get("ms"),
        "leaderboard_ms": query_ms,
    }


def export_refresh(ctx: Ctx) -> None:
    reps = 3 if ctx.quick else 7
    small, main = ensure_bus(ctx, "small"), ensure_bus(ctx, "main")
    rs = {"small": _refresh_cost(ctx, small, reps), "main": _refresh_cost(ctx, main, reps)}
    for label, r in rs.items():
        size = _k(ctx.sizes[label])
        ctx.add(
            Result(
                "export refresh",
                f"one new run at {size}: refresh + publish",
                r["refresh_median_ms"] + r["publish_median_ms"],
                "ms",
                "(reference)",
                "INFO",
                r,
                f"refresh {r['refresh_median_ms']:.0f} ms (max "
                f"{r['refresh_max_ms']:.0f}) + publication of the export tables "
                f"{r['publish_median_ms']:.0f} ms; median of {reps}; failed exports: "
                f"{r['failed'] or 'none'}",
            )
        )
        ctx.add(
            Result(
                "export refresh",
                f"summary files rewrite at {size}",
                r["files_median_ms"],
                "ms",
                "(reference)",
                "INFO",
                {},
                "Bus.write_files(force=True): every summary file, then a publication",
            )
        )
    nm = _k(ctx.sizes["main"])
    for label in ("materialised", "all rows"):
        ms = rs["main"]["leaderboard_ms"][label]
        ctx.add(
            Result(
                "export refresh",
                f"leaderboard in-process, {label} ({nm})",
                ms,
                "ms",
                "(reference)",
                "INFO",
                {},
                f"median of {reps}, warm read-only connection to exports/bus.duckdb",
            )
        )


def report(ctx: Ctx) -> None:
    """The dashboard on the main bus: ``write_report`` (median of 3) and the page's load in
    headless Chromium over a blank page's (bench/report.py)."""
    from .report import measure_page

    cfg = ensure_bus(ctx, "main")
    m = measure_page(cfg)
    n = ctx.sizes.get("main", ctx.n_main)
    median, load = float(m["median_s"] or 0.0), m["load_s"]
    ctx.results += [
        Result(
            "report",
            f"write_report at {n:,} runs",
            median,
            "s",
            "<= 3 s",
            "PASS" if median <= 3.0 else "MISS",
            note=f"first {m['first_s']:.2f} s (imports matplotlib); {m['bytes'] / 1024:.0f} KiB",
        ),
        Result(
            "report",
            "page load in headless chromium",
            load,
            "s",
            "<= 1 s",
            "INFO" if load is None else ("PASS" if load <= 1.0 else "MISS"),
            note="no chromium" if load is None else f"over a blank page's {m['blank_s']:.2f} s",
        ),
    ]


SCENARIOS: dict[str, Callable[[Ctx], None]] = {
    "burst": burst,
    "query": query,
    "latency-idle": latency_idle,
    "catch-up": catch_up,  # includes idle CPU, RSS and latency at 100k
    "restart": restart,
    "growth": growth,  # includes bytes per published batch
    "export-refresh": export_refresh,
    "report": report,
}
