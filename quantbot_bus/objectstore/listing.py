"""Finding finished runs in a bucket by listing (ListObjectsV2).

A finished run is a ``<run_type>/<run_id>/metadata.json`` key below the root's prefix (a single
PUT is atomic, so the key exists only once the whole metadata.json does). Two ways to list:

- :meth:`Lister.new_runs`: per run type, only the keys after that run type's **cursor** (the
  greatest metadata key seen so far, ``StartAfter``). Cheap: it costs the new keys, not the
  bucket. Run ids that sort in time order (the writer's default ``YYYYMMDDTHHMMSS-...``, ULIDs)
  are all found this way.
- :meth:`Lister.all_runs`: the whole prefix (the periodic **reconcile**). It finds what the
  cursor cannot: run ids that sort before the cursor, late files, deleted runs.

Keys that cannot be a run (``..`` or ``.`` parts, a run id the contract forbids) are returned
as :class:`BadKey` so they are rejected with a reason instead of skipped in silence.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..contract import METADATA_NAME, RUN_ID_RE
from ..ignore import is_ignored_name
from .location import S3Location


@dataclass(frozen=True)
class RunObject:
    """A ``metadata.json`` key of a run, with what the listing says about it."""

    run_type: str
    run_id: str
    metadata_key: str
    etag: str
    size: int

    @property
    def run_prefix(self) -> str:
        """The run's key prefix, ending in '/'."""
        return self.metadata_key[: -len(METADATA_NAME)]


@dataclass(frozen=True)
class BadKey:
    """A ``metadata.json`` key that cannot name a run; ``reason`` says why."""

    key: str
    reason: str


def _classify(loc: S3Location, obj: dict[str, Any]) -> RunObject | BadKey | None:
    key: str = obj["Key"]
    rel = key[len(loc.key_prefix()) :]
    parts = rel.split("/")
    if parts[-1] != METADATA_NAME:
        return None
    if len(parts) > 3 and all(p not in ("", ".", "..") for p in parts):
        return None  # a metadata.json file inside a run directory: part of that run
    if len(parts) != 3 or any(p in ("", ".", "..") for p in parts):
        return BadKey(
            key,
            "the key is not <run_type>/<run_id>/metadata.json below the root (an empty, '.' or "
            "'..' part, or the wrong depth); keys are never resolved as paths",
        )
    run_type, run_id, _ = parts
    if is_ignored_name(run_type) or is_ignored_name(run_id):
        return None
    if not RUN_ID_RE.fullmatch(run_id) or not RUN_ID_RE.fullmatch(run_type):
        return BadKey(
            key,
            f"{run_type}/{run_id}: run types and run ids are 1-128 characters from "
            "A-Z a-z 0-9 . _ - starting with a letter or digit",
        )
    return RunObject(run_type, run_id, key, str(obj.get("ETag", "")).strip('"'), int(obj["Size"]))


class Lister:
    """Lists the runs below an :class:`S3Location`; ``cursors`` (run type -> last metadata
    key seen) is the caller's, kept up to date by :meth:`new_runs`."""

    def __init__(self, client: Any, loc: S3Location, cursors: dict[str, str]) -> None:
        self.client = client
        self.loc = loc
        self.cursors = cursors

    def _pages(
        self, prefix: str, start_after: str | None = None, delimiter: str | None = None
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
                if name and not is_ignored_name(name):
                    found.append(name)
        return found

    def new_runs(self, *, open_for_s: float = 600.0) -> list[RunObject | BadKey]:
        """Runs whose metadata key sorts after their run type's cursor; advances the cursors.

        The cursor never passes a run that is still being uploaded (objects but no
        metadata.json yet, the newest written less than ``open_for_s`` ago): writers finish out
        of order, and a run finishing after a later-sorting one must still be found here, not
        only by the reconcile. Runs listed again are the caller's to skip."""
        out: list[RunObject | BadKey] = []
        now = time.time()
        for run_type in self.run_types():
            prefix = self.loc.key(run_type) + "/"
            cursor = self.cursors.get(run_type)
            newest_meta: str | None = None
            open_runs: dict[str, float] = {}  # run prefix -> newest object's mtime
            done: set[str] = set()
            for page in self._pages(prefix, start_after=cursor):
                for obj in page.get("Contents", []):
                    key: str = obj["Key"]
                    found = _classify(self.loc, obj)
                    if found is not None:
                        out.append(found)
                        if isinstance(found, RunObject):
                            done.add(found.run_prefix)
                            newest_meta = max(newest_meta or key, key)
                        continue
                    cut = key.find("/", len(prefix))
                    if cut < 0:
                        continue  # an object right below the run type: not part of a run
                    run_prefix = key[: cut + 1]
                    if cursor is not None and run_prefix < cursor:
                        continue  # the rest of a run whose metadata.json was seen before
                    modified = obj.get("LastModified")
                    stamp = modified.timestamp() if modified is not None else now
                    if now - stamp < open_for_s:
                        open_runs[run_prefix] = max(open_runs.get(run_prefix, 0.0), stamp)
            still_open = sorted(p for p in open_runs if p not in done)
            candidate = still_open[0] if still_open else newest_meta
            if candidate is not None and (cursor is None or candidate > cursor):
                self.cursors[run_type] = candidate
        return out

    def all_runs(self) -> Iterator[RunObject | BadKey]:
        """Every run below the prefix (the reconcile's full listing)."""
        for page in self._pages(self.loc.key_prefix()):
            for obj in page.get("Contents", []):
                found = _classify(self.loc, obj)
                if found is not None:
                    yield found
