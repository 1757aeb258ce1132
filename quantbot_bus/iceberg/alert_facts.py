"""The facts of the ``run_failed`` and ``rejected`` alert rules on the Iceberg backend:
:class:`RunAlertFacts`, what the scale-out daemon itself committed.

That backend writes no local publication for :func:`~quantbot_bus.alerts.facts.gather_facts` to
read, so the daemon's poll thread hands its own commits to the lookout thread through this one
object (:meth:`RunAlertFacts.record` after each poll, :meth:`RunAlertFacts.item_facts` at each
check). Registration is exactly once across daemons and the commits decide it, so each daemon
alerting on what it committed alerts each failed run and each rejection once across all of them.

- **A failed run** is one this daemon registered (``PollResult.registered``). It stays while it
  was registered within ``failed_window_s`` and is the newest run of its run type and
  ``params`` that this daemon registered or saw registered by another daemon first
  (``PollResult.already``); a later one (by ``created_at``, then run id) ends it, and so does its
  leaving the tables: deleted from the bucket (``PollResult.deleted``) or taken out as its
  changed version is rejected; a new version that replaced it (``PollResult.updated``) is judged
  as a new registration. Runs of that key that other daemons registered without this one looking
  at them are not seen here (docs/scale-out.md, "Open").
- **A rejection** is one this daemon recorded (``PollResult.rejected``: the first record of a run
  directory with that reason). It stays open until the run is registered, by any daemon (the
  ledger follows every daemon's ``runs_d`` commits; looked up by the run id the directory's
  name gives, which is the one a registration has; not for a second directory of a registered
  run id, :mod:`~quantbot_bus.iceberg.twins`, whose run id is registered from the other one), or its directory is gone from a full reconcile's listing
  (``PollResult.listing``). A bad completion marker's rejection (``<prefix>/_inbox/...``: the full
  listing does not list markers) clears :data:`~quantbot_bus.objectstore.listing.MARKER_KEEP_S`
  after it was first seen, when maintenance has deleted the marker.

The rows have the keys of the local backend's (``alerts.facts.failed_runs``, ``open_rejections``),
so the conditions have the same keys, severities and messages.

Cost: :meth:`~RunAlertFacts.record` is in proportion to the poll's runs, plus one ledger
look-up of the open rejections' names while any are open (at most ``max_items``) and, on a full
reconcile with open rejections, one pass over its listing (the reconcile itself is O(bucket)).
At most ``max_items`` failed runs and ``max_items`` rejections are kept, newest first; when more
arrive the oldest are forgotten and the rule is reported incomplete (its missing conditions kept
as they are) until the forgotten failed runs would have left their window, or, for rejections,
until fewer than ``max_items`` are open again (what was forgotten is then resolved: the daemon no
longer knows of it).

Kept in ``state_dir/iceberg-alert-facts.json`` (:func:`~quantbot_bus.fsutil.write_atomic`, after a
poll that changed them), so a restarted daemon neither resolves nor fires again the conditions
that are still open. One lock guards the state: the poll thread records, the lookout reads.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..alerts.facts import ItemFacts
from ..contract.layout import run_id_of
from ..fsutil import write_atomic
from ..log import get_logger
from ..objectstore.listing import INBOX, MARKER_KEEP_S, RunObject
from ..objectstore.location import S3Location
from ..timeutil import parse_utc, utc_now
from .alert_state import Failed, State, decode, encode, iso, naive
from .twins import TWIN_REASON_END

if TYPE_CHECKING:
    from ..alerts.settings import AlertSettings
    from ..config import Config
    from .result import PollResult

log = get_logger("quantbot_bus.alerts")

FACTS_NAME = "iceberg-alert-facts.json"


def facts_path(state_dir: Path) -> Path:
    """Where the daemon keeps them: ``state_dir/iceberg-alert-facts.json``."""
    return Path(state_dir) / FACTS_NAME


class RunAlertFacts:
    """The failed runs and open rejections this daemon committed (see module doc).

    ``settings``: ``failed_window_s`` and ``max_items``; ``loc``: the bucket's root (run
    directories are ``s3://`` URIs below it)."""

    def __init__(self, path: Path, settings: AlertSettings, loc: S3Location) -> None:
        self.path = Path(path)
        self.settings = settings
        self.loc = loc
        self._inbox = loc.uri(loc.key(INBOX)) + "/"  # bad completion markers' run dirs
        self._lock = threading.Lock()
        self._state = State()
        self._unsaved = False

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path: Path, settings: AlertSettings, loc: S3Location) -> RunAlertFacts:
        """The facts kept at ``path`` (none when it is missing; an unreadable file is logged as
        ``alert.facts_failed`` and started afresh), trimmed to the current ``max_items``."""
        facts = cls(path, settings, loc)
        try:
            facts._state = decode(json.loads(facts.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return facts
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "alert.facts_failed", source=str(path), error=f"{type(exc).__name__}: {exc}"
            )
            return facts
        facts._bound()
        return facts

    # ------------------------------------------------------------------ the poll thread
    def record(
        self,
        result: PollResult,
        known: Callable[[list[str]], set[str]],
        *,
        now: dt.datetime | None = None,
    ) -> bool:
        """Take one successful poll's commits in (module doc); ``known(run_ids)`` returns those
        ``runs_d`` holds (the ledger). Saves the file when something changed (a failed save is
        logged, ``alert.facts_failed``, and tried again after the next poll). Returns whether
        anything changed."""
        now = naive(utc_now() if now is None else now)
        with self._lock:
            changed = self._expire(now)
            changed |= self._runs(result, now)
            changed |= self._rejected(result, now)
            changed |= self._cleared(result, known)
            changed |= self._bound()
            self._unsaved |= changed
            text = encode(self._state) if self._unsaved else None
        if text is not None:
            try:
                write_atomic(self.path, text)
                self._unsaved = False
            except OSError as exc:
                log.warning(
                    "alert.facts_failed",
                    source=str(self.path),
                    error=f"{type(exc).__name__}: {exc}",
                )
        return changed

    def _expire(self, now: dt.datetime) -> bool:
        s, changed = self._state, False
        since = now - dt.timedelta(seconds=self.settings.failed_window_s)
        for run_id in [r for r, e in s.failed.items() if e.registered < since]:
            del s.failed[run_id]
            changed = True
        if s.failed_dropped_until is not None and now >= s.failed_dropped_until:
            s.failed_dropped_until = None
            changed = True
        marker_since = now - dt.timedelta(seconds=MARKER_KEEP_S)
        for run_dir in [d for d in s.rejections if self._is_marker(d)]:
            first = parse_utc(s.rejections[run_dir]["first_seen_at"])
            if first is not None and first < marker_since:
                del s.rejections[run_dir]
                changed = True
        return changed

    def _runs(self, result: PollResult, now: dt.datetime) -> bool:
        """The runs in ``runs_d`` now that this poll looked at, oldest first: each ends the
        failed runs before it of its run type and params; a failed one this daemon registered
        is kept unless a later one of its key is. Only run types with a failure are looked at."""
        s, changed = self._state, False
        for run_id in [r for r in result.updated if r in s.failed]:
            del s.failed[run_id]  # the failed version was replaced by a new one (below)
            changed = True
        done = set(result.registered) | set(result.already) | set(result.updated)
        mine = set(result.registered) | set(result.updated)
        runs = [r for r in result.validated if r.info.run_id in done]
        types = {str(e.row["run_type"]) for e in s.failed.values()}
        types |= {r.info.run_type for r in runs if r.info.status == "failed"}
        ordered = sorted(
            (
                (parse_utc(r.info.created_at) or now, r.info.run_id, r)
                for r in runs
                if r.info.run_type in types
            ),
            key=lambda item: item[:2],
        )
        if not ordered:
            return changed
        by_group: dict[tuple[str, str], list[Failed]] = {}
        for entry in s.failed.values():
            by_group.setdefault(entry.group, []).append(entry)
        stamp = iso(now)
        for t, run_id, run in ordered:
            info, order = run.info, (t, run_id)
            params = json.dumps(info.params, sort_keys=True)
            group = by_group.setdefault((info.run_type, params), [])
            for older in [e for e in group if e.order < order]:
                group.remove(older)
                del s.failed[str(older.row["run_id"])]
                changed = True
            if info.status != "failed" or run_id not in mine or group:
                continue  # a kept failure of its key is later than this run
            row = {
                "run_id": run_id,
                "run_type": info.run_type,
                "error": info.error,
                "run_dir": run.uri,
                "created_at": iso(t),
                "registered_at": stamp,
            }
            entry = Failed(row=row, params=params, t=t, registered=now)
            group.append(entry)
            s.failed[run_id] = entry
            changed = True
        return changed

    def _rejected(self, result: PollResult, now: dt.datetime) -> bool:
        """The new rejections; a failed run whose directory is among them is out of the tables
        (its changed version broke the contract: :mod:`.changes`), so no longer alerted."""
        stamp = iso(now)
        if result.rejected and self._state.failed:
            dirs = {r.run_dir for r in result.rejected}
            for run_id in [i for i, e in self._state.failed.items() if e.row["run_dir"] in dirs]:
                del self._state.failed[run_id]
        for r in result.rejected:
            row = self._state.rejections.pop(r.run_dir, None)
            attempts = 1 if row is None else int(row["attempts"]) + 1
            first = stamp if row is None else row["first_seen_at"]
            # (re)inserted last: the dict's order is the order rows were last seen in
            self._state.rejections[r.run_dir] = {
                "run_dir": r.run_dir,
                "run_id": r.run_id,
                "reason": r.reason,
                "first_seen_at": first,
                "last_seen_at": stamp,
                "attempts": attempts,
            }
        return bool(result.rejected)

    def _cleared(self, result: PollResult, known: Callable[[list[str]], set[str]]) -> bool:
        s, changed = self._state, False
        for run_id in result.deleted:
            changed |= s.failed.pop(run_id, None) is not None
        names = {
            d: run_id_of(d)
            for d, row in s.rejections.items()
            if row["run_id"] is not None
            and not self._is_marker(d)
            and not str(row.get("reason", "")).endswith(TWIN_REASON_END)
        }
        if names:
            registered = known(sorted(set(names.values())))
            for run_dir, name in names.items():
                if name in registered:
                    del s.rejections[run_dir]
                    changed = True
        if result.full and s.rejections:
            changed |= self._gone(result)
        return changed

    def _gone(self, result: PollResult) -> bool:
        """Rejections whose directory (or bad key) a full listing no longer finds: one pass
        over the listing, looking each key up among the open rejections."""
        base = self.loc.uri("")
        wanted = {d.removeprefix(base) for d in self._state.rejections if not self._is_marker(d)}
        found: set[str] = set()
        for f in result.listing:
            key = f.run_prefix[:-1] if isinstance(f, RunObject) else f.key
            if key in wanted:
                found.add(key)
        gone = [base + key for key in wanted - found]
        for d in gone:
            del self._state.rejections[d]
        return bool(gone)

    def _bound(self) -> bool:
        """At most ``max_items`` of each kind, the newest (module doc)."""
        s, limit, changed = self._state, self.settings.max_items, False
        if len(s.failed) > limit:
            ranked = sorted(s.failed.values(), key=lambda e: e.order, reverse=True)
            window = dt.timedelta(seconds=self.settings.failed_window_s)
            for e in ranked[limit:]:
                del s.failed[str(e.row["run_id"])]
                until = e.registered + window
                if s.failed_dropped_until is None or until > s.failed_dropped_until:
                    s.failed_dropped_until = until
            changed = True
        if len(s.rejections) > limit:
            for run_dir in list(s.rejections)[: len(s.rejections) - limit]:
                del s.rejections[run_dir]  # the least recently seen first
            s.rejected_dropped = changed = True
        elif s.rejected_dropped and len(s.rejections) < limit:
            s.rejected_dropped, changed = False, True
        return changed

    def _is_marker(self, run_dir: str) -> bool:
        return run_dir.startswith(self._inbox)

    # ------------------------------------------------------------------ the lookout thread
    def item_facts(self, now: dt.datetime) -> ItemFacts:
        """The failed runs within the window (newest first) and the open rejections (most
        recently seen first), as rows of the local backend's shape; a rule is incomplete while
        forgotten entries could still be active (module doc)."""
        now = naive(now)
        since = now - dt.timedelta(seconds=self.settings.failed_window_s)
        with self._lock:
            s = self._state
            failed = sorted(
                (e for e in s.failed.values() if e.registered >= since),
                key=lambda e: e.order,
                reverse=True,
            )
            rows = tuple(dict(e.row) for e in failed)
            rejections = tuple(dict(r) for r in reversed(s.rejections.values()))
            dropped = s.failed_dropped_until is not None and now < s.failed_dropped_until
            incomplete = {"run_failed"} if dropped else set()
            incomplete |= {"rejected"} if s.rejected_dropped else set()
        return ItemFacts(failed_runs=rows, rejections=rejections, incomplete=frozenset(incomplete))

    def counts(self) -> dict[str, int]:
        """How many failed runs and open rejections are kept (tests, the log)."""
        with self._lock:
            return {"failed": len(self._state.failed), "rejections": len(self._state.rejections)}


def load_for(config: Config, loc: S3Location) -> RunAlertFacts | None:
    """The facts of a daemon with ``config``: None unless ``[alerts]`` is on with
    ``run_failed`` or ``rejected``."""
    settings: AlertSettings = config.alerts
    if not any(settings.rule_on(r) for r in ("run_failed", "rejected")):
        return None
    return RunAlertFacts.load(facts_path(config.state_dir), settings, loc)
