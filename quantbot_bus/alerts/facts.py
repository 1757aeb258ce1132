"""What the alert rules look at, gathered cheaply: :class:`Facts` and :func:`gather_facts`.

- the daemon's status dict (:mod:`quantbot_bus.daemon.status`: ``degraded``, ``pending``,
  ``oldest_pending_lag_s``, ``last_batch_at``, ``state``...), passed in by the daemon;
- the disk usage of the filesystems holding the artifacts root, the state and the exports
  directories (``shutil.disk_usage``, one entry per filesystem);
- from the reader-side publication (:func:`quantbot_bus.exports.query.open_query_connection`):
  recent failed runs that are still the newest run of their run type and parameters, the open
  rejections, and the standing regressions of the view ``exports.regressions`` (absent: none);
- with ``catalog = "iceberg"``, which writes no such publication: the failed runs and open
  rejections from an :class:`ItemSource` the scale-out daemon passes in (what it committed:
  :class:`quantbot_bus.iceberg.alert_facts.RunAlertFacts`); ``regression`` is never checked
  there, and a one-shot ``sync`` (no source) leaves all three incomplete.

Every query is bounded: failed runs and regressions by a time window (``registered_at`` /
``created_at``), all three by ``max_items`` (one row more is read to know it was truncated), so a
check costs the same with 100 runs or 100,000. A source that cannot be read is logged
(``alert.facts_failed``) and its rules are marked incomplete: their conditions are kept as they
were, neither fired nor resolved, until it can be read again.
"""

# ruff: noqa: S608 - the SQL below is built from constants and column names we checked

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from ..log import get_logger
from ..timeutil import utc_now
from .settings import AlertSettings

if TYPE_CHECKING:
    from ..config import Config

log = get_logger("quantbot_bus.alerts")

#: The columns ``exports.regressions`` must have for the ``regression`` rule.
REGRESSION_COLUMNS = (
    "run_id",
    "run_type",
    "metric",
    "verdict",
    "baseline_value",
    "new_value",
    "change",
    "reason",
    "created_at",
)
#: Columns of ``exports.regressions`` that, when present, also tell runs apart for the rule.
_REGRESSION_GROUP_EXTRA = ("strategy", "params")


@dataclass(frozen=True)
class DiskUsage:
    """One filesystem: the configured directories on it, its size and the space left to us."""

    paths: tuple[str, ...]
    total: int
    free: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.total if self.total else 0.0


@dataclass(frozen=True)
class Facts:
    """One check's view of the bus. ``incomplete`` names the rules whose source could not be
    read completely (truncated at ``max_items``, or failing): see :class:`~.model.Conditions`."""

    now: dt.datetime
    status: Mapping[str, Any] | None = None
    disks: tuple[DiskUsage, ...] = ()
    failed_runs: tuple[dict[str, Any], ...] = ()
    rejections: tuple[dict[str, Any], ...] = ()
    regressions: tuple[dict[str, Any], ...] = ()
    incomplete: frozenset[str] = field(default_factory=frozenset)
    #: seconds the alerter has itself seen work waiting with no new batch (:class:`WaitWatch`;
    #: the status's ``oldest_pending_lag_s`` is only as fresh as the worker's last round)
    waiting_s: float | None = None
    #: whether ``status`` is a running daemon's; False for a one-shot ``sync``/``rebuild``,
    #: whose checks skip the rules of :data:`~.settings.DAEMON_RULES` (left as they are)
    daemon: bool = True


@dataclass(frozen=True)
class ItemFacts:
    """Failed runs and open rejections from a source other than the publication, in the rows
    :func:`failed_runs` and :func:`open_rejections` return; ``incomplete`` names the rules whose
    rows the source could not give in full."""

    failed_runs: tuple[dict[str, Any], ...] = ()
    rejections: tuple[dict[str, Any], ...] = ()
    incomplete: frozenset[str] = frozenset()


class ItemSource(Protocol):
    """What gives :class:`ItemFacts` at a check (the scale-out daemon's record of its commits)."""

    def item_facts(self, now: dt.datetime) -> ItemFacts: ...


def waiting_work(status: Mapping[str, Any] | None) -> int:
    """Runs waiting for the daemon in ``status``: pending, plus the scale-out ``backlog`` and the
    ``dirty`` directories when the status has them."""
    total = 0
    for key in ("pending", "backlog", "dirty"):
        value = (status or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            total += value
    return total


class WaitWatch:
    """How long work has been waiting with no new batch, as seen across checks: it starts when
    a status shows waiting work and restarts whenever ``last_batch_at`` changes or no work
    waits. A daemon whose worker hangs stops updating its status counts; this does not."""

    def __init__(self) -> None:
        self._since: dt.datetime | None = None
        self._batch: Any = None

    def observe(self, status: Mapping[str, Any] | None, now: dt.datetime) -> float | None:
        if status is None:
            return None
        batch = status.get("last_batch_at")
        if not waiting_work(status) or batch != self._batch or self._since is None:
            self._since = now if waiting_work(status) else None
            self._batch = batch
        return None if self._since is None else (now - self._since).total_seconds()


def gather_facts(
    config: Config,
    settings: AlertSettings,
    status: Mapping[str, Any] | None,
    *,
    now: dt.datetime | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    daemon: bool = True,
    items: ItemSource | None = None,
) -> Facts:
    """The facts the enabled rules need. ``status`` is the daemon's status dict (None: the
    status rules are incomplete), or with ``daemon=False`` a one-shot ``sync``/``rebuild``'s
    (see :attr:`Facts.daemon`); ``con`` a connection to the publication to use instead of
    opening one (it is not closed); ``items`` the failed runs and rejections on the Iceberg
    backend (None there: those rules are incomplete). Never raises for a source that fails
    (see module doc)."""
    now = utc_now() if now is None else now
    incomplete: set[str] = set()
    if status is None:
        status_rules = ("registration_failed", "degraded", "stalled")
        incomplete.update(r for r in status_rules if settings.rule_on(r))
    disks: tuple[DiskUsage, ...] = ()
    if settings.rule_on("disk_low"):
        try:
            disks = disk_usage(_bus_dirs(config))
        except OSError as exc:
            _failed("disk_low", exc)
            incomplete.add("disk_low")
    failed: tuple[dict[str, Any], ...] = ()
    rejections: tuple[dict[str, Any], ...] = ()
    regressions: tuple[dict[str, Any], ...] = ()
    wanted = [r for r in ("run_failed", "rejected", "regression") if settings.rule_on(r)]
    if wanted and config.catalog == "iceberg":
        # the Iceberg backend writes no local publication: what the daemon committed instead
        failed, rejections, missing = _from_items(items, wanted, now)
        incomplete.update(missing)
        wanted = []
    if wanted:
        own = con is None
        try:
            if con is None:
                from ..exports.query import open_query_connection

                con = open_query_connection(config)
        except Exception as exc:  # noqa: BLE001 - nothing published yet, a broken file...
            _failed("publication", exc)
            incomplete.update(wanted)
            con = None
        if con is not None:
            try:
                naive_now = now.astimezone(dt.UTC).replace(tzinfo=None) if now.tzinfo else now
                limit = settings.max_items
                sources = {
                    "run_failed": lambda c: failed_runs(
                        c, naive_now - dt.timedelta(seconds=settings.failed_window_s), limit
                    ),
                    "rejected": lambda c: open_rejections(c, limit),
                    "regression": lambda c: standing_regressions(
                        c, naive_now - dt.timedelta(seconds=settings.regression_window_s), limit
                    ),
                }
                found: dict[str, tuple[dict[str, Any], ...]] = {}
                for rule in wanted:
                    try:
                        rows, truncated = sources[rule](con)
                    except Exception as exc:  # noqa: BLE001 - one source failing is not all
                        _failed(rule, exc)
                        incomplete.add(rule)
                        continue
                    found[rule] = tuple(rows)
                    if truncated:
                        incomplete.add(rule)
                failed = found.get("run_failed", ())
                rejections = found.get("rejected", ())
                regressions = found.get("regression", ())
            finally:
                if own:
                    con.close()
    return Facts(
        now=now,
        status=status,
        disks=disks,
        failed_runs=failed,
        rejections=rejections,
        regressions=regressions,
        incomplete=frozenset(incomplete),
        daemon=daemon,
    )


def _from_items(
    items: ItemSource | None, wanted: list[str], now: dt.datetime
) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...], set[str]]:
    """The failed runs, the rejections and the incomplete rules of ``wanted`` on the Iceberg
    backend: from ``items``; ``regression`` always incomplete (no regression checks there)."""
    missing = {r for r in wanted if r == "regression"}
    if items is None:
        return (), (), set(wanted)
    try:
        got = items.item_facts(now)
    except Exception as exc:  # noqa: BLE001 - a source failing never stops the check
        _failed("daemon", exc)
        return (), (), set(wanted)
    missing |= {r for r in got.incomplete if r in wanted}
    failed = got.failed_runs if "run_failed" in wanted else ()
    rejections = got.rejections if "rejected" in wanted else ()
    return failed, rejections, missing


def _failed(source: str, exc: BaseException) -> None:
    log.warning("alert.facts_failed", source=source, error=f"{type(exc).__name__}: {exc}")


def _bus_dirs(config: Config) -> list[Path]:
    """The directories whose filesystems ``disk_low`` watches: root (when local), state, exports."""
    paths = [] if getattr(config, "object_root", "") else [Path(config.root)]
    return [*paths, Path(config.state_dir), Path(config.exports_dir)]


# ---------------------------------------------------------------------------- disks


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_usage(paths: list[Path]) -> tuple[DiskUsage, ...]:
    """One :class:`DiskUsage` per filesystem holding ``paths`` (a path that does not exist yet
    counts as its nearest existing ancestor), in the order the paths are given."""
    by_dev: dict[int, tuple[list[str], Path]] = {}
    for path in paths:
        where = _existing(path)
        dev = os.stat(where).st_dev
        if dev not in by_dev:
            by_dev[dev] = ([], where)
        if str(path) not in by_dev[dev][0]:
            by_dev[dev][0].append(str(path))
    out = []
    for listed, where in by_dev.values():
        usage = shutil.disk_usage(where)
        out.append(DiskUsage(paths=tuple(listed), total=usage.total, free=usage.free))
    return tuple(out)


# ---------------------------------------------------------------------------- publication


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _bounded(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool]:
    return rows[:limit], len(rows) > limit


FAILED_RUNS_SQL = """
WITH recent AS (
    SELECT run_id, run_type, status, error, run_dir, registered_at,
           coalesce(created_at, registered_at) AS t, CAST(params AS VARCHAR) AS p
    FROM catalog.runs_d
    WHERE deleted_at IS NULL AND registered_at >= ?
)
SELECT f.run_id, f.run_type, f.error, f.run_dir, f.t AS created_at, f.registered_at
FROM recent AS f
WHERE f.status = 'failed'
  AND NOT EXISTS (
      SELECT 1 FROM recent AS s
      WHERE s.run_type = f.run_type AND s.p IS NOT DISTINCT FROM f.p
        AND (s.t > f.t OR (s.t = f.t AND s.run_id > f.run_id))
  )
ORDER BY f.t DESC, f.run_id DESC
LIMIT ?
"""


def failed_runs(
    con: duckdb.DuckDBPyConnection, since: dt.datetime, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Live failed runs registered at or after ``since`` (naive UTC) that no later run of the
    same run type and parameters followed, newest first; at most ``limit``, and whether there
    were more."""
    return _bounded(_dicts(con.execute(FAILED_RUNS_SQL, [since, limit + 1])), limit)


def open_rejections(
    con: duckdb.DuckDBPyConnection, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Open rejections (``resolved_at IS NULL``), most recently seen first; at most ``limit``,
    and whether there were more."""
    cur = con.execute(
        "SELECT run_dir, run_id, reason, first_seen_at, last_seen_at, attempts "
        "FROM catalog.rejections_f WHERE resolved_at IS NULL "
        "ORDER BY last_seen_at DESC, run_dir LIMIT ?",
        [limit + 1],
    )
    return _bounded(_dicts(cur), limit)


def regression_columns(con: duckdb.DuckDBPyConnection) -> list[str] | None:
    """The columns of ``exports.regressions``, or None when the publication has no such view."""
    try:
        cur = con.execute("SELECT * FROM exports.regressions LIMIT 0")
    except duckdb.CatalogException:
        return None
    return [d[0] for d in cur.description or ()]


def standing_regressions(
    con: duckdb.DuckDBPyConnection, since: dt.datetime, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Regressions created at or after ``since`` that are still the latest conclusive verdict of
    their run type and metric (and ``strategy`` and ``params``, when the view has them): a later
    ``improvement`` or ``no change`` ends one, ``insufficient data`` does not. Newest first; at
    most ``limit``, and whether there were more. No view: none."""
    columns = regression_columns(con)
    if columns is None:
        return [], False
    missing = [c for c in REGRESSION_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"exports.regressions lacks the column(s) {', '.join(missing)}")
    group = ", ".join(
        ["run_type", "metric"]
        + [f"CAST({c} AS VARCHAR)" for c in _REGRESSION_GROUP_EXTRA if c in columns]
    )
    cur = con.execute(
        f"""
        SELECT {", ".join(REGRESSION_COLUMNS)} FROM (
            SELECT * FROM exports.regressions
            WHERE created_at >= ? AND verdict IN ('regression', 'improvement', 'no change')
            QUALIFY row_number() OVER (
                PARTITION BY {group} ORDER BY created_at DESC, run_id DESC) = 1
        )
        WHERE verdict = 'regression'
        ORDER BY created_at DESC, run_id DESC, metric
        LIMIT ?
        """,
        [since, limit + 1],
    )
    return _bounded(_dicts(cur), limit)
