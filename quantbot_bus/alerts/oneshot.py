"""Alerts and the dashboard without the daemon: ``sync`` and ``rebuild`` look once after their
batch.

:func:`sync` and :func:`rebuild` (what the CLI's commands call) run the pipeline's one-shot
drivers (:func:`quantbot_bus.pipeline.sync`, :func:`quantbot_bus.pipeline.rebuild`), then
:func:`look_after` takes the state-dir lock again and looks once with a
:class:`~.watch.Watch` (``daemon=False``), the daemon's lookout code:

- the alert rules are checked on the publication just made, with the daemon's state file, rate
  limits and sinks: a condition the daemon or an earlier sync notified is not notified again, one
  that cleared is resolved. The status the status rules see is the one-shot's own: after a batch
  that committed and published, ``registration_failed`` and ``degraded`` are not active; a
  one-shot that failed (anything but a refusal: the lock held, a bad config) looks with its error
  as the status's ``degraded`` (``sync failed: ...``), so ``registration_failed`` fires, then
  re-raises (the command exits non-zero) and the next one that goes through resolves it.
  ``stalled``, about a running daemon, is left as it is (:data:`~.settings.DAEMON_RULES`).
- the page is rewritten when its schedule says so (:mod:`quantbot_bus.report.schedule`: the
  daemon's rule, its interval counted across runs in ``state_dir/report.json``).
- then, the lock released, the webhook and the command get up to :data:`~.watch.ALERT_DRAIN_S`
  to deliver. What they could not deliver is logged (``alert.webhook_failed`` /
  ``alert.command_failed``, and ``alert.undelivered`` with the counts, warnings) and the command
  still succeeds: the registration went through. The webhook's undelivered notifications wait in
  the outbox for the next look (:mod:`.outbox`).

If a daemon took the lock between the batch and the look, the look is left to it
(``alert.look_skipped``). With ``catalog = "iceberg"`` only the status rules are checked (the
scale-out daemon's lookout also checks failed runs and rejections, on what it committed) and no
page is written: both need the local publication.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BusyError, ConfigError
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

    return _run_then_look(config, "sync", pipeline.sync)


def rebuild(config: Config) -> BatchResult:
    """``quantbot-bus rebuild``: :func:`quantbot_bus.pipeline.rebuild`, then
    :func:`look_after`; returns the rebuild's result."""
    from .. import pipeline

    result: BatchResult = _run_then_look(config, "rebuild", pipeline.rebuild)
    return result


def _run_then_look(config: Config, role: str, run: Callable[[Config], Any]) -> Any:
    """``run(config)``, then :func:`look_after` its result; when it raises, the look with its
    failure (:func:`_look_failed`), then the exception again."""
    try:
        result = run(config)
    except Exception as exc:
        _look_failed(config, role, exc)
        raise
    look_after(config, role, result)
    return result


def one_shot_status(role: str, result: Any, failure: BaseException | None = None) -> dict[str, Any]:
    """The status dict the status rules see after a one-shot batch: after one that went through,
    nothing degraded, its pending runs, the batch just now; after one that raised ``failure``,
    ``degraded`` says why (``<role> failed: ...``) and no batch is recorded."""
    pending = getattr(result, "pending", None) or {}
    degraded = None if failure is None else f"{role} failed: {type(failure).__name__}: {failure}"
    return {
        "writer": role,
        "pid": os.getpid(),
        "pending": len(pending),
        "last_batch_at": iso_utc() if failure is None else None,
        "degraded": degraded,
    }


def _look_failed(config: Config, role: str, exc: Exception) -> None:
    """The look after a one-shot that raised ``exc``: ``registration_failed`` fires (a refusal
    to start, a held lock or a bad config, is not a failed registration: no look)."""
    if isinstance(exc, BusyError | ConfigError):
        return
    look_after(config, role, None, failure=exc)


def look_after(
    config: Config, role: str, result: Any, *, failure: BaseException | None = None
) -> Look | None:
    """One look after a one-shot's batch (module doc): the alerts, then the page if due, under
    the state-dir lock; then the sinks' delivery. Returns what it did, or None when it did not
    look (both off, a daemon holds the lock, or the look failed as a whole: logged). Never raises."""
    if not (config.alerts.enabled or config.report.enabled):
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
        status = one_shot_status(role, result, failure)
        look = watch.look(status, published_source(config.exports_dir))
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
