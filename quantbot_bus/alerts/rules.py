"""Facts → the active conditions: one function per rule, :func:`evaluate` runs the enabled ones.

=====================  ==========================  =========  ==========================================
rule                   key                         severity   active while
=====================  ==========================  =========  ==========================================
run_failed             ``run_failed:<run_id>``     warning    a live failed run, registered within
                                                              ``failed_window_s``, is still the newest
                                                              run of its run type and parameters
rejected               ``rejected:<run_dir>``      warning    the rejection is open (``resolved_at``
                                                              null: the directory still breaks the
                                                              contract)
regression             ``regression:<run_id>:      warning    the verdict, created within
                       <metric>``                             ``regression_window_s``, is the latest
                                                              conclusive one of its run type and metric
registration_failed    ``registration_failed``     critical   the daemon's commits fail (its status's
                                                              ``degraded`` starts ``commit failed``),
                                                              or a ``sync``/``rebuild`` failed
degraded               ``degraded``                critical   the status has any other ``degraded``
                                                              reason (the publication, or the Iceberg
                                                              backend's store or catalog)
stalled                ``stalled``                 critical   work waits (pending runs, a scale-out
                                                              backlog, dirty directories) for
                                                              ``stalled_after_s`` with no
                                                              batch committed, or the status file is
                                                              ``stale``
disk_low               ``disk_low:<path>``         critical   a watched filesystem has less than
                                                              ``disk_min_free_percent`` or
                                                              ``disk_min_free_bytes`` free
=====================  ==========================  =========  ==========================================

docs/alerts.md explains the choices. A rule whose facts are incomplete is passed on in
:attr:`Conditions.incomplete`, so its missing conditions are not taken as resolved; so is
``stalled`` in a one-shot ``sync``/``rebuild``'s check (it is about a running daemon).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..output import jsonable
from ..timeutil import age_s
from .facts import Facts, waiting_work
from .model import Condition, Conditions
from .settings import DAEMON_RULES, RULES, AlertSettings

_MAX_TEXT = 300  # a reason or error longer than this is cut in the one-line message


def _short(text: Any) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= _MAX_TEXT else line[: _MAX_TEXT - 1] + "…"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row's values as JSON carries them (times as ISO strings)."""
    return {k: jsonable(v) for k, v in row.items()}


def run_failed(facts: Facts, settings: AlertSettings) -> Iterator[Condition]:
    for row in facts.failed_runs:
        run_id, run_type = row["run_id"], row["run_type"]
        error = f": {_short(row.get('error'))}" if row.get("error") else ""
        yield Condition(
            key=f"run_failed:{run_id}",
            rule="run_failed",
            severity="warning",
            message=(
                f"{run_type} run {run_id} failed{error}; see `quantbot-bus show {run_id}` and "
                "rerun it (the alert clears when a later run with the same parameters registers)"
            ),
            details=_plain(row),
        )


def rejected(facts: Facts, settings: AlertSettings) -> Iterator[Condition]:
    for row in facts.rejections:
        run_dir = row["run_dir"]
        yield Condition(
            key=f"rejected:{run_dir}",
            rule="rejected",
            severity="warning",
            message=(
                f"run directory {run_dir} is rejected: {_short(row.get('reason'))}; fix or "
                "remove it (`quantbot-bus rejected` lists all)"
            ),
            details=_plain(row),
        )


def regression(facts: Facts, settings: AlertSettings) -> Iterator[Condition]:
    for row in facts.regressions:
        run_id, metric = row["run_id"], row["metric"]
        yield Condition(
            key=f"regression:{run_id}:{metric}",
            rule="regression",
            severity="warning",
            message=(
                f"{row['run_type']} run {run_id} regressed on {metric}: {row.get('new_value')} "
                f"vs baseline {row.get('baseline_value')} (change {row.get('change')}); "
                f"{_short(row.get('reason'))}"
            ),
            details=_plain(row),
        )


#: How a ``degraded`` reason starts when runs are not being registered: the daemon's commit
#: failed, or a one-shot ``sync``/``rebuild`` failed (:func:`~.oneshot.one_shot_status`).
_REGISTRATION_FAILURES = ("commit failed", "sync failed", "rebuild failed")


def _is_commit_failure(status: dict[str, Any] | Any) -> bool:
    reason = str(status.get("degraded") or "")
    return reason.startswith(_REGISTRATION_FAILURES) and not status.get("backend")


def registration_failed(facts: Facts, settings: AlertSettings) -> Iterator[Condition]:
    status = facts.status or {}
    if status.get("degraded") and _is_commit_failure(status):
        yield Condition(
            key="registration_failed",
            rule="registration_failed",
            severity="critical",
            message=(
                f"runs are not being registered: {_short(status['degraded'])}; "
                + (
                    "the next sync tries again: check free space and the sync's output"
                    if status.get("writer") in ("sync", "rebuild")
                    else "the daemon retries with back-off: check free space and the log "
                    "(batch.failed)"
                )
            ),
            details={"degraded": status["degraded"]},
        )


def degraded(facts: Facts, settings: AlertSettings) -> Iterator[Condition]:
    status = facts.status or {}
    reason = status.get("degraded")
    if not reason:
        return
    if _is_commit_failure(status) and settings.rule_on("registration_failed"):
        return  # registration_failed says it
    what = "the catalog backend" if status.get("backend") else "the catalog or its publication"
    yield Condition(
        key="degraded",
        rule="degraded",
        severity="critical",
        message=(
            f"{what} is degraded: {_short(reason)}; readers keep the last good state and the "
            "daemon retries: check the store, the disk and the log (bus.degraded, daemon.degraded)"
        ),
        details={"degraded": reason, "backend": status.get("backend")},
    )


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def stalled(facts: Facts, settings: AlertSettings) -> Iterator[Condition]:
    status = facts.status or {}
    if status.get("state") == "stale":
        yield Condition(
            key="stalled",
            rule="stalled",
            severity="critical",
            message=(
                f"the daemon (pid {status.get('pid')}) is alive but has not written its status "
                f"for {status.get('age_s')} s; it is hung: look at its log, then restart it"
            ),
            details={"state": "stale", "pid": status.get("pid"), "age_s": status.get("age_s")},
        )
        return
    work = waiting_work(status)
    if work == 0:
        return
    last = status.get("last_batch_at") or status.get("started_at")
    idle = age_s(last, facts.now) if isinstance(last, str) else float("inf")
    lag = _number(status.get("oldest_pending_lag_s"))
    waited = max(lag or 0.0, facts.waiting_s or 0.0)
    if idle < settings.stalled_after_s or waited < settings.stalled_after_s:
        return
    idle_text = "ever" if idle == float("inf") else f"{idle:.0f} s"
    yield Condition(
        key="stalled",
        rule="stalled",
        severity="critical",
        message=(
            f"the daemon is stalled: {work} run(s) waiting for {waited:.0f} s with no batch "
            f"committed for {idle_text}; look at `quantbot-bus status` and the log, and restart "
            "the daemon if it stays so"
        ),
        details={
            "waiting": work,
            "pending": status.get("pending"),
            "backlog": status.get("backlog"),
            "oldest_pending_lag_s": lag,
            "last_batch_at": status.get("last_batch_at"),
            "idle_s": None if idle == float("inf") else round(idle, 1),
        },
    )


def disk_low(facts: Facts, settings: AlertSettings) -> Iterator[Condition]:
    for disk in facts.disks:
        low_bytes = settings.disk_min_free_bytes > 0 and disk.free < settings.disk_min_free_bytes
        low_percent = disk.free_percent < settings.disk_min_free_percent
        if not (low_bytes or low_percent):
            continue
        yield Condition(
            key=f"disk_low:{disk.paths[0]}",
            rule="disk_low",
            severity="critical",
            message=(
                f"low disk space: {_human(disk.free)} free of {_human(disk.total)} "
                f"({disk.free_percent:.1f} %) on the filesystem of {', '.join(disk.paths)} "
                f"(minimum {settings.disk_min_free_percent:g} % and "
                f"{_human(settings.disk_min_free_bytes)}); prune old runs or exports, or grow it"
            ),
            details={
                "paths": list(disk.paths),
                "free_bytes": disk.free,
                "total_bytes": disk.total,
                "free_percent": round(disk.free_percent, 3),
                "min_free_percent": settings.disk_min_free_percent,
                "min_free_bytes": settings.disk_min_free_bytes,
            },
        )


RULE_FUNCTIONS: dict[str, Callable[[Facts, AlertSettings], Iterator[Condition]]] = {
    "run_failed": run_failed,
    "rejected": rejected,
    "regression": regression,
    "registration_failed": registration_failed,
    "degraded": degraded,
    "stalled": stalled,
    "disk_low": disk_low,
}
assert tuple(RULE_FUNCTIONS) == RULES


def evaluate(facts: Facts, settings: AlertSettings) -> Conditions:
    """The active conditions of the enabled rules (a key once: the first wins). Facts of a
    one-shot (``facts.daemon`` false) skip :data:`~.settings.DAEMON_RULES`: those rules are
    passed on as incomplete, so their conditions are neither fired nor resolved."""
    active: dict[str, Condition] = {}
    skipped: set[str] = set()
    for name, rule in RULE_FUNCTIONS.items():
        if not settings.rule_on(name):
            continue
        if not facts.daemon and name in DAEMON_RULES:
            skipped.add(name)
            continue
        for condition in rule(facts, settings):
            active.setdefault(condition.key, condition)
    return Conditions(active=tuple(active.values()), incomplete=facts.incomplete | skipped)
