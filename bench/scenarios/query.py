"""The query scenario: whole-process CLI queries on the main bus."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ..common import Result, median, verdict
from .context import LEADERBOARD_RAW_SQL, LEADERBOARD_SQL, Ctx, _k
from .datasets import ensure_bus


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
