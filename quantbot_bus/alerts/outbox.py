"""The notifications a sink could not deliver, kept in ``state_dir/alerts-outbox.json`` and
sent again later, by the same process or the next one (the daemon after a restart, the next
``sync``).

What goes in: a webhook notification given up on after its retries (receiver down, 5xx,
timeouts), and any background sink's notification dropped unsent (its queue full, or the
process stopping before it got its turn). A command that ran and failed is not kept (it may
have done part of its work; see docs/alerts.md). Per sink, one notification per condition key is
kept, the newest: a later notification of the same key (the resolution of a firing that never
arrived) replaces it, and a newer notification handed to the sink takes the kept one out. At
most ``limit`` per sink; the oldest beyond are dropped (logged as ``alert.dropped``).

The webhook sends a kept notification with the ``Idempotency-Key`` of its first attempt, so a
receiver that got it after all (a response lost on the way back) can tell.

The file is small JSON, rewritten atomically (:func:`~quantbot_bus.fsutil.write_atomic`) under a
process-local lock; the state-dir lock keeps other processes out of the checks, but a one-shot's
sinks deliver after it released that lock, so every change re-reads the file first.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

from ..fsutil import write_atomic
from ..log import get_logger
from .model import Notification

log = get_logger("quantbot_bus.alerts")

OUTBOX_NAME = "alerts-outbox.json"
OUTBOX_VERSION = 1


class Outbox:
    """The kept notifications of every sink, by sink name (see module doc)."""

    def __init__(self, path: Path, limit: int = 100) -> None:
        self.path = Path(path)
        self.limit = limit
        self._lock = threading.Lock()
        self._keys: dict[str, set[str]] = {}  # what the file held when last read or written

    # ------------------------------------------------------------------ file
    def _read(self) -> dict[str, list[dict[str, Any]]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            sinks = data["sinks"] if data.get("version") == OUTBOX_VERSION else {}
        except FileNotFoundError:
            sinks = {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "alert.outbox_unreadable",
                path=str(self.path),
                error=f"{type(exc).__name__}: {exc}",
            )
            sinks = {}
        out = {str(k): [n for n in v if isinstance(n, dict)] for k, v in sinks.items()}
        self._keys = {k: {str(n.get("key")) for n in v} for k, v in out.items()}
        return out

    def _write(self, sinks: dict[str, list[dict[str, Any]]]) -> None:
        sinks = {k: v for k, v in sinks.items() if v}
        self._keys = {k: {str(n.get("key")) for n in v} for k, v in sinks.items()}
        try:
            if not sinks:
                self.path.unlink(missing_ok=True)
                return
            text = json.dumps({"version": OUTBOX_VERSION, "sinks": sinks}, indent=1, default=str)
            write_atomic(self.path, text + "\n")
        except OSError as exc:
            log.warning(
                "alert.outbox_failed", path=str(self.path), error=f"{type(exc).__name__}: {exc}"
            )

    # ------------------------------------------------------------------ changes
    def keep(self, sink: str, note: Notification) -> None:
        """Keep ``note`` for ``sink`` (replacing a kept one of the same key)."""
        with self._lock:
            sinks = self._read()
            kept = [n for n in sinks.get(sink, []) if n.get("key") != note.key]
            kept.append(dataclasses.asdict(note))
            if len(kept) > self.limit:
                for old in kept[: len(kept) - self.limit]:
                    log.warning(
                        "alert.dropped",
                        sink=sink,
                        key=old.get("key"),
                        reason="outbox full",
                        limit=self.limit,
                    )
                kept = kept[-self.limit :]
            sinks[sink] = kept
            self._write(sinks)
            log.info("alert.kept", sink=sink, key=note.key, status=note.status, kept=len(kept))

    def supersede(self, sink: str, key: str) -> None:
        """A newer notification of ``key`` went to ``sink``: the kept one is not sent."""
        if key not in self._keys.get(sink, ()):
            return  # not in the file as last seen (the common case: no file read)
        with self._lock:
            sinks = self._read()
            kept = sinks.get(sink, [])
            sinks[sink] = [n for n in kept if n.get("key") != key]
            if len(sinks[sink]) != len(kept):
                self._write(sinks)

    def take(self, sink: str) -> list[Notification]:
        """The notifications kept for ``sink``, oldest first, taken out of the file (a failed
        redelivery keeps them again)."""
        with self._lock:
            sinks = self._read()
            raw = sinks.pop(sink, [])
            if raw:
                self._write(sinks)
        names = {f.name for f in dataclasses.fields(Notification)}
        notes = []
        for item in raw:
            try:
                notes.append(Notification(**{k: v for k, v in item.items() if k in names}))
            except TypeError as exc:
                log.warning("alert.outbox_unreadable", sink=sink, error=str(exc)[:200])
        return notes

    def counts(self) -> dict[str, int]:
        """Notifications kept per sink, as the file has them now."""
        with self._lock:
            return {k: len(v) for k, v in self._read().items() if v}
