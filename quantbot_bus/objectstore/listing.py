"""Finding finished runs in a bucket by listing (ListObjectsV2).

A finished run is a ``<run_type>/<run_id>/metadata.json`` key below the root's prefix (a PUT is
atomic, so the key exists only once the whole file does). Listing keys in their sort order
cannot find *new* runs cheaply (run ids sort by name, not by when they finished), so a writer
also puts an empty **completion marker** after metadata.json:

    <prefix>/_inbox/<UTC finish time, YYYYMMDDTHHMMSS.ffffffZ>/<run_type>/<run_id>

Marker keys sort by finish time, so two ways to list:

- :meth:`Lister.new_runs`: the markers after a persisted **cursor** (``StartAfter``): costs the
  new runs, not the bucket. The cursor trails the newest marker by :data:`CLOCK_SKEW_S`, so a
  writer whose clock runs a little behind is not skipped (markers seen twice are the caller's
  to skip).
- :meth:`Lister.all_runs`: every ``metadata.json`` below each run type (the periodic
  **reconcile**). It finds runs from producers that put no marker, late files and deletions.
  It also finds the **seed layout**'s runs (``YYYY-MM/run_id=<id>/``,
  :mod:`quantbot_bus.contract.layout`): a ``run_id=<id>`` prefix below a month prefix is a run
  once it holds ``run.json`` or ``_SUCCESS``. Seed producers put no marker, so the reconcile is
  the only way these runs are found; their :class:`RunObject` carries the listed objects
  (:attr:`RunObject.objects`), which their validation reads instead of a directory listing.

Keys that cannot be a run (``..`` or ``.`` parts, a run id the contract forbids) are returned
as :class:`BadKey` so they are rejected with a reason instead of skipped in silence.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..contract import METADATA_NAME, RUN_ID_RE
from ..contract.layout import (
    MONTH_RE,
    RUN_JSON,
    SEED,
    SEED_PREFIX,
    SUCCESS_NAME,
    V1,
    is_seed_dir,
)
from ..ignore import is_ignored_name
from .location import S3Location, delete_objects

INBOX = "_inbox"
#: The cursor trails the newest marker by this much (clocks of writer hosts differ a little).
CLOCK_SKEW_S = 5.0
#: Completion markers older than this are deleted (:meth:`Lister.expire_markers`): every daemon
#: starts with a full reconcile, so one stopped for longer finds those runs without them.
MARKER_KEEP_S = 7 * 86400.0
_STAMP = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class Listed:
    """One object below a run's prefix as a listing gave it: its key relative to the prefix,
    size, ETag (without quotes) and LastModified."""

    rel: str
    size: int
    etag: str = ""
    modified: dt.datetime | None = None


@dataclass(frozen=True)
class RunObject:
    """A run's manifest key: a v1 run's ``metadata.json``; a seed run's ``run.json`` (its key
    even while only ``_SUCCESS`` exists), ``run_type`` then the month and ``run_id`` the
    directory's ``run_id=`` suffix. ``etag`` and ``size`` (of that manifest) when a listing gave
    them, and on a full listing ``signature``: a hash of every object below the run's prefix
    (key, ETag, size), which changes whenever any of its files does. ``layout``: ``v1`` or
    ``seed``; ``objects``: of a seed run on a full listing, every object below its prefix.
    ``written_at``: when its manifest was written (POSIX seconds by the store's clock, its
    LastModified) as the validation that last found the run incomplete read it, else None."""

    run_type: str
    run_id: str
    metadata_key: str
    etag: str = ""
    size: int = -1
    signature: str = ""
    layout: str = V1
    objects: tuple[Listed, ...] = ()
    written_at: float | None = None

    @property
    def run_prefix(self) -> str:
        """The run's key prefix, ending in '/'."""
        return self.metadata_key.rpartition("/")[0] + "/"

    def age_s(self, now: float) -> float:
        """Seconds from :attr:`written_at` to ``now`` (``time.time()``); 0 when unknown or
        ahead of ``now`` (the clocks differ)."""
        return 0.0 if self.written_at is None else max(0.0, now - self.written_at)


@dataclass(frozen=True)
class BadKey:
    """A key that cannot name a run; ``reason`` says why."""

    key: str
    reason: str


def marker_key(loc: S3Location, run_type: str, run_id: str, finished: dt.datetime) -> str:
    return loc.key(INBOX, finished.astimezone(dt.UTC).strftime(_STAMP), run_type, run_id)


def _run_object(
    loc: S3Location, key: str, run_type: str, run_id: str, **listed: Any
) -> RunObject | BadKey | None:
    if any(p in ("", ".", "..") for p in (run_type, run_id)):
        return BadKey(
            key,
            "the key is not <run_type>/<run_id>/metadata.json below the root (an empty, '.' or "
            "'..' part); keys are never resolved as paths",
        )
    if is_ignored_name(run_type) or is_ignored_name(run_id):
        return None
    if not RUN_ID_RE.fullmatch(run_id) or not RUN_ID_RE.fullmatch(run_type):
        return BadKey(
            key,
            f"{run_type}/{run_id}: run types and run ids are 1-128 characters from "
            "A-Z a-z 0-9 . _ - starting with a letter or digit",
        )
    return RunObject(run_type, run_id, loc.key(run_type, run_id, METADATA_NAME), **listed)


#: The names that make a seed run directory a run: its manifest and its completion marker.
_SEED_MARKERS = (RUN_JSON, SUCCESS_NAME)
_BAD_SEED_KEY = (
    "the key is not YYYY-MM/run_id=<id>/{name} below the root (an empty, '.' or '..' part); "
    "keys are never resolved as paths"
)


def _is_month_marker(parts: list[str]) -> bool:
    """True for a key (split below the root) that names a seed run's manifest or completion
    marker below a month prefix."""
    return (
        len(parts) > 1 and MONTH_RE.fullmatch(parts[0]) is not None and parts[-1] in _SEED_MARKERS
    )


def _seed_run(
    loc: S3Location, month: str, run_dir: str, objs: list[dict[str, Any]], signature: str
) -> Iterator[RunObject | BadKey]:
    """The listed objects of one ``<month>/run_id=<id>/`` prefix: a seed :class:`RunObject`
    once ``run.json`` or ``_SUCCESS`` is among them; a :class:`BadKey` for a manifest or
    marker key with an empty, '.' or '..' part."""
    if is_ignored_name(run_dir):
        return
    prefix = loc.key(month, run_dir) + "/"
    listed: list[Listed] = []
    for obj in objs:
        key: str = obj["Key"]
        rel = key[len(prefix) :] if key.startswith(prefix) else ""
        parts = rel.split("/")
        if parts[-1] in _SEED_MARKERS and any(p in ("", ".", "..") for p in parts):
            yield BadKey(key, _BAD_SEED_KEY.format(name=parts[-1]))
            continue
        if rel:
            etag = str(obj.get("ETag", "")).strip('"')
            listed.append(Listed(rel, int(obj["Size"]), etag, obj.get("LastModified")))
    names = {o.rel: o for o in listed}
    if RUN_JSON not in names and SUCCESS_NAME not in names:
        return
    manifest = names.get(RUN_JSON)
    yield RunObject(
        month,
        run_dir[len(SEED_PREFIX) :],
        prefix + RUN_JSON,
        manifest.etag if manifest is not None else "",
        manifest.size if manifest is not None else -1,
        signature,
        SEED,
        tuple(listed),
    )


def _seed_marked(loc: S3Location, key: str, month: str, run_id: str) -> RunObject | BadKey | None:
    """The seed run a completion marker ``_inbox/<time>/<month>/run_id=<id>`` names; its
    objects are listed when it is validated."""
    if is_ignored_name(run_id):
        return None
    if not RUN_ID_RE.fullmatch(run_id):
        return BadKey(
            key,
            f"{month}/{SEED_PREFIX}{run_id}: run ids are 1-128 characters from "
            "A-Z a-z 0-9 . _ - starting with a letter or digit",
        )
    return RunObject(month, run_id, loc.key(month, SEED_PREFIX + run_id, RUN_JSON), layout=SEED)


def _classify(loc: S3Location, obj: dict[str, Any]) -> RunObject | BadKey | None:
    """A listed ``<run_type>/<run_id>/metadata.json`` object (None: not a run's metadata)."""
    key: str = obj["Key"]
    parts = key[len(loc.key_prefix()) :].split("/")
    if parts[-1] != METADATA_NAME:
        return None
    if len(parts) > 3 and all(p not in ("", ".", "..") for p in parts):
        return None  # a metadata.json file inside a run directory: part of that run
    if len(parts) != 3:
        return BadKey(
            key, "metadata.json is not at <run_type>/<run_id>/metadata.json below the root"
        )
    etag = str(obj.get("ETag", "")).strip('"')
    return _run_object(loc, key, parts[0], parts[1], etag=etag, size=int(obj["Size"]))


class Lister:
    """Lists the runs below an :class:`S3Location`. ``cursor`` is the marker key the next
    :meth:`new_runs` starts after ('' for the first); the caller persists it."""

    def __init__(self, client: Any, loc: S3Location, cursor: str = "") -> None:
        self.client = client
        self.loc = loc
        self.cursor = cursor

    def _pages(
        self, prefix: str, start_after: str = "", delimiter: str = ""
    ) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.loc.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            page = self.client.list_objects_v2(**kwargs)
            yield page
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def run_types(self) -> list[str]:
        """The run-type "directories" right below the prefix."""
        base = self.loc.key_prefix()
        found = []
        for page in self._pages(base, delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                name = cp["Prefix"][len(base) :].rstrip("/")
                if name and name != INBOX and not is_ignored_name(name):
                    found.append(name)
        return found

    def new_runs(self) -> list[RunObject | BadKey]:
        """The runs whose markers sort after the cursor; moves :attr:`cursor` to trail the
        newest of them by :data:`CLOCK_SKEW_S`."""
        inbox = self.loc.key(INBOX) + "/"
        out: list[RunObject | BadKey] = []
        newest = ""
        for page in self._pages(inbox, start_after=self.cursor):
            for obj in page.get("Contents", []):
                key: str = obj["Key"]
                parts = key[len(inbox) :].split("/")
                if len(parts) != 3:
                    out.append(
                        BadKey(
                            key, "a completion marker must be _inbox/<UTC time>/<run_type>/<run_id>"
                        )
                    )
                    continue
                newest = max(newest, parts[0])
                if is_seed_dir(f"{parts[1]}/{parts[2]}") and parts[2] != SEED_PREFIX:
                    found = _seed_marked(self.loc, key, parts[1], parts[2][len(SEED_PREFIX) :])
                else:
                    found = _run_object(self.loc, key, parts[1], parts[2])
                if found is not None:
                    out.append(found)
        if newest:
            try:
                at = dt.datetime.strptime(newest, _STAMP).replace(tzinfo=dt.UTC)
            except ValueError:
                at = None
            if at is not None:
                trail = inbox + (at - dt.timedelta(seconds=CLOCK_SKEW_S)).strftime(_STAMP)
                self.cursor = max(self.cursor, trail)
        return out

    def expire_markers(
        self, *, keep_s: float = MARKER_KEEP_S, now: dt.datetime | None = None
    ) -> int:
        """Delete the completion markers whose finish time is over ``keep_s`` ago; returns how
        many. Markers sort by that time, so the listing stops at the first younger one: the
        cost is the markers deleted, not the bucket."""
        now = dt.datetime.now(dt.UTC) if now is None else now
        inbox = self.loc.key(INBOX) + "/"
        cutoff = inbox + (now - dt.timedelta(seconds=keep_s)).strftime(_STAMP)
        doomed: list[str] = []
        for page in self._pages(inbox):
            keys = [str(obj["Key"]) for obj in page.get("Contents", [])]
            doomed += [k for k in keys if k < cutoff]
            if keys and keys[-1] >= cutoff:
                break
        return delete_objects(self.client, self.loc.bucket, doomed)

    def all_runs(self) -> Iterator[RunObject | BadKey]:
        """Every run below each run type or month (the reconcile's full listing), each with
        its :attr:`RunObject.signature`. Keys come in order, so a run's objects are contiguous:
        they are gathered per ``<run_type>/<run_id>`` (``<month>/run_id=<id>``) prefix."""
        base = self.loc.key_prefix()
        for run_type in self.run_types():
            group = ""
            objs: list[dict[str, Any]] = []
            for page in self._pages(self.loc.key(run_type) + "/"):
                for obj in page.get("Contents", []):
                    run_prefix = "/".join(obj["Key"][len(base) :].split("/", 2)[:2])  # type/id
                    if run_prefix != group:  # the previous run's objects are all seen
                        yield from self._run_of(group, objs)
                        group, objs = run_prefix, []
                    objs.append(obj)
            yield from self._run_of(group, objs)

    def _run_of(self, group: str, objs: list[dict[str, Any]]) -> Iterator[RunObject | BadKey]:
        """The run (and the bad keys) among the objects of one ``<run_type>/<run_id>`` prefix,
        in whichever layout its names say."""
        if not objs:
            return
        digest = hashlib.sha256()
        for obj in objs:
            digest.update(f"{obj['Key']}\0{obj.get('ETag', '')}\0{obj.get('Size')}\n".encode())
        signature = digest.hexdigest()[:32]
        if is_seed_dir(group):  # YYYY-MM/run_id=<id>: the names alone decide
            month, _, run_dir = group.partition("/")
            yield from _seed_run(self.loc, month, run_dir, objs, signature)
            return
        base = self.loc.key_prefix()
        found = None
        for obj in objs:
            parts = obj["Key"][len(base) :].split("/")
            if _is_month_marker(parts) and any(p in ("", ".", "..") for p in parts):
                yield BadKey(obj["Key"], _BAD_SEED_KEY.format(name=parts[-1]))
                continue
            classified = _classify(self.loc, obj)
            if isinstance(classified, BadKey):
                yield classified
            elif classified is not None:
                found = classified
        if found is not None:
            yield replace(found, signature=signature)
