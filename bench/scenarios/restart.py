"""The restart scenario: start -> READY on the large bus."""

from __future__ import annotations

from ..common import Result, log_events, median, start_daemon, verdict
from .context import Ctx, _k
from .datasets import ensure_large


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
