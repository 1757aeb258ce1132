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
class RunObject:
    """A run's ``metadata.json`` key; ``etag`` and ``size`` when a listing gave them, and on a
    full listing ``signature``: a hash of every object below the run's prefix (key, ETag,
    size), which changes whenever any of its files does."""

    run_type: str
    run_id: str
    metadata_key: str
    etag: str = ""
    size: int = -1
    signature: str = ""

    @property
    def run_prefix(self) -> str:
        """The run's key prefix, ending in '/'."""
        return self.metadata_key[: -len(METADATA_NAME)]


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
        """Every run below each run type (the reconcile's full listing), each with its
        :attr:`RunObject.signature`. Keys come in order, so a run's objects are contiguous."""
        base = self.loc.key_prefix()
        for run_type in self.run_types():
            prefix, found, digest = "", None, hashlib.sha256()
            for page in self._pages(self.loc.key(run_type) + "/"):
                for obj in page.get("Contents", []):
                    key: str = obj["Key"]
                    run_prefix = "/".join(key[len(base) :].split("/", 2)[:2])  # type/id
                    if run_prefix != prefix:  # the previous run's objects are all seen
                        if found is not None:
                            yield replace(found, signature=digest.hexdigest()[:32])
                        prefix, found, digest = run_prefix, None, hashlib.sha256()
                    digest.update(f"{key}\0{obj.get('ETag', '')}\0{obj.get('Size')}\n".encode())
                    classified = _classify(self.loc, obj)
                    if isinstance(classified, BadKey):
                        yield classified
                    elif classified is not None:
                        found = classified
            if found is not None:
                yield replace(found, signature=digest.hexdigest()[:32])
