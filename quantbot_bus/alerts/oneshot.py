"""Alerts and the dashboard without the daemon: ``sync`` and ``rebuild`` look once after their
batch.

:func:`sync` and :func:`rebuild` (what the CLI's commands call) run the pipeline's one-shot
drivers (:func:`quantbot_bus.pipeline.sync`, :func:`quantbot_bus.pipeline.rebuild`), then
:func:`look_after` takes the state-dir lock again and looks once with a
:class:`~.watch.Watch` (``daemon=False``), the daemon's lookout code:

- the alert rules are checked on the publication just made, with the daemon's state file, rate
  limits and sinks: a condition the daemon or an earlier sync notified is not notified again, one
  that cleared is resolved. The status the status rules see is the one-shot's own: it committed
  and published, so ``registration_failed`` and ``degraded`` are not active (a sync that fails
  raises before it looks, and exits non-zero); ``stalled``, about a running daemon, is left as it
  is (:data:`~.settings.DAEMON_RULES`).
- the page is rewritten when its schedule says so (:mod:`quantbot_bus.report.schedule`: the
  daemon's rule, its interval counted across runs in ``state_dir/report.json``).
- then, the lock released, the webhook and the command get up to :data:`~.watch.ALERT_DRAIN_S`
  to deliver. What they could not deliver is logged (``alert.webhook_failed`` /
  ``alert.command_failed``, and ``alert.undelivered`` with the counts, warnings) and the command
  still succeeds: the registration went through.

If a daemon took the lock between the batch and the look, the look is left to it
(``alert.look_skipped``). With ``catalog = "iceberg"`` there is no look: the scale-out daemon
has no lookout either.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import BusyError
from ..log import get_logger
from ..statelock import StateLock
from ..timeutil import iso_utc
from .watch import ALERT_DRAIN_S, Look, Watch

if TYPE_CHECKING:
    from ..catalog import BatchResult
    from ..config import Config

log = get_logger("quantbot_bus.alerts")


def sync(config: Config) -> Any:
    """``quantbot-bus sync``: :func:`quantbot_bus.pipeline.sync`, then :func:`look_after`;
    returns the sync's result."""
    from .. import pipeline

    result = pipeline.sync(config)
    look_after(config, "sync", result)
    return result


def rebuild(config: Config) -> BatchResult:
    """``quantbot-bus rebuild``: :func:`quantbot_bus.pipeline.rebuild`, then
    :func:`look_after`; returns the rebuild's result."""
    from .. import pipeline

    result = pipeline.rebuild(config)
    look_after(config, "rebuild", result)
    return result


def one_shot_status(role: str, result: Any) -> dict[str, Any]:
    """The status dict the status rules see after a one-shot batch that went through: nothing
    degraded, its pending runs, the batch just now."""
    pending = getattr(result, "pending", None) or {}
    return {
        "writer": role,
        "pid": os.getpid(),
        "pending": len(pending),
        "last_batch_at": iso_utc(),
        "degraded": None,
    }


def look_after(config: Config, role: str, result: Any) -> Look | None:
    """One look after a one-shot's batch (module doc): the alerts, then the page if due, under
    the state-dir lock; then the sinks' delivery. Returns what it did, or None when it did not
    look (both off, the Iceberg backend, a daemon holds the lock, or the look failed as a
    whole: logged). Never raises."""
    if config.catalog == "iceberg" or not (config.alerts.enabled or config.report.enabled):
        return None
    lock = StateLock(config.lock_path, role)
    try:
        lock.acquire()
    except BusyError as exc:
        log.info("alert.look_skipped", writer=role, reason=str(exc))
        return None
    except OSError as exc:
        log.warning("alert.check_failed", writer=role, error=f"{type(exc).__name__}: {exc}")
        return None
    watch: Watch | None = None
    look: Look | None = None
    try:
        from ..report.schedule import published_source

        watch = Watch(config, daemon=False)
        look = watch.look(one_shot_status(role, result), published_source(config.exports_dir))
    except Exception as exc:  # noqa: BLE001 - a failed look never fails the registration
        log.error("alert.check_failed", writer=role, error=f"{type(exc).__name__}: {exc}")
    finally:
        lock.release()
    if watch is not None:
        lost = watch.close(ALERT_DRAIN_S)
        if lost:
            log.warning(
                "alert.undelivered",
                writer=role,
                sinks=lost,
                note="the runs are registered; see alert.webhook_failed / alert.command_failed",
            )
    return look
