"""The :class:`Alerter`: facts → rules → the state machine → the sinks, once per check.

The daemon makes one at start and calls :meth:`Alerter.tick` from its supervisor loop (it
checks at most every ``check_interval_s``) and :meth:`Alerter.close` at stop::

    alerter = Alerter(config)                      # settings from config.alerts
    ...
    alerter.tick(config, status_dict)              # in the loop: cheap, never raises
    ...
    alerter.close(timeout=5.0)

:meth:`Alerter.check` takes facts already gathered (tests, or a caller with its own). What the
webhook could not deliver (and what any background sink dropped unsent) is kept in
``state_dir/alerts-outbox.json`` (:mod:`.outbox`) and handed to the sink again at the first
check and then every ``redeliver_after_s`` (so also by the next process). Nothing in
here raises into the caller: a failure is logged (``alert.check_failed``) and the next check
runs as usual.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..log import get_logger
from .background import BackgroundSink
from .command import CommandSink
from .facts import Facts, ItemSource, WaitWatch, gather_facts
from .model import Notification
from .outbox import OUTBOX_NAME, Outbox
from .rules import evaluate
from .settings import AlertSettings
from .sinks import JsonlSink, LogSink, Sink
from .state import AlertState
from .webhook import WebhookSink

if TYPE_CHECKING:
    from ..config import Config

log = get_logger("quantbot_bus.alerts")

STATE_NAME = "alerts.json"
JSONL_NAME = "alerts.jsonl"


def state_path_for(config: Config) -> Path:
    """Where the alert state lives: ``state_dir/alerts.json``."""
    return Path(config.state_dir) / STATE_NAME


def jsonl_path_for(config: Config) -> Path:
    """Where notifications are appended: ``exports_dir/alerts.jsonl``."""
    return Path(config.exports_dir) / JSONL_NAME


def settings_of(config: Config) -> AlertSettings:
    """The config's ``[alerts]`` section."""
    return config.alerts


class Alerter:
    """Checks the rules and notifies each condition once (see module doc).

    ``config_or_settings``: a :class:`~quantbot_bus.config.Config` (settings from its
    ``alerts``; the paths default to ``state_dir/alerts.json`` and ``exports_dir/alerts.jsonl``)
    or :class:`AlertSettings` with both paths given. ``sinks`` replaces the sinks the settings
    ask for (log, jsonl, webhook, command). ``items``: the failed runs and rejections on the
    Iceberg backend (:func:`~.facts.gather_facts`), from the scale-out daemon."""

    def __init__(
        self,
        config_or_settings: Config | AlertSettings,
        state_path: Path | None = None,
        jsonl_path: Path | None = None,
        *,
        sinks: Sequence[Sink] | None = None,
        items: ItemSource | None = None,
    ) -> None:
        if isinstance(config_or_settings, AlertSettings):
            if state_path is None or jsonl_path is None:
                raise ValueError("Alerter(settings, ...) needs state_path and jsonl_path")
            self.settings = config_or_settings
        else:
            self.settings = settings_of(config_or_settings)
            state_path = state_path or state_path_for(config_or_settings)
            jsonl_path = jsonl_path or jsonl_path_for(config_or_settings)
        self.state_path = Path(state_path)
        self.jsonl_path = Path(jsonl_path)
        self.items = items
        self.state = AlertState.load(self.state_path)
        self.sinks: list[Sink] = list(sinks) if sinks is not None else self._make_sinks()
        self.outbox = Outbox(self.state_path.with_name(OUTBOX_NAME))
        self.outbox.counts()  # learn what it holds (supersede looks there without reading)
        for sink in self.sinks:
            if isinstance(sink, BackgroundSink):
                sink.on_lost = lambda note, name=sink.name: self.outbox.keep(name, note)
        self._next_redelivery = 0.0  # time.monotonic(): the first check sends what is kept
        self._wait = WaitWatch()
        self._last_check: float | None = None  # time.monotonic() of the last tick's check
        self.checks = 0
        self.last_check_ms: float | None = None

    def _make_sinks(self) -> list[Sink]:
        s = self.settings
        sinks: list[Sink] = []
        if s.log:
            sinks.append(LogSink())
        if s.jsonl:
            sinks.append(JsonlSink(self.jsonl_path))
        if s.webhook.enabled:
            sinks.append(WebhookSink(s.webhook))
        if s.command.enabled:
            sinks.append(CommandSink(s.command))
        return sinks

    # ------------------------------------------------------------------ checks

    def due(self) -> bool:
        """Whether :meth:`tick` would check now (``check_interval_s`` since the last one)."""
        return (
            self._last_check is None
            or time.monotonic() - self._last_check >= self.settings.check_interval_s
        )

    def tick(
        self, config: Config, status: Mapping[str, Any] | None, *, daemon: bool = True
    ) -> list[Notification]:
        """Gather the facts and check, if ``check_interval_s`` has passed since the last
        tick's check (else nothing); ``status`` is the daemon's status dict, or with
        ``daemon=False`` a one-shot ``sync``/``rebuild``'s (:attr:`Facts.daemon`). Never
        raises."""
        if not self.settings.enabled or not self.due():
            return []
        self._last_check = time.monotonic()
        try:
            facts = gather_facts(config, self.settings, status, daemon=daemon, items=self.items)
        except Exception as exc:  # noqa: BLE001 - an alert failure never stops the daemon
            log.error("alert.check_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return []
        return self.check(facts)

    def check(self, facts: Facts) -> list[Notification]:
        """Evaluate the rules on ``facts``, step the state machine at ``facts.now``, hand the
        notifications to the sinks (the slow ones only queue) and save the state if it changed.
        Returns the notifications; never raises."""
        if not self.settings.enabled:
            return []
        t0 = time.perf_counter()
        try:
            if facts.waiting_s is None:
                facts = dataclasses.replace(
                    facts, waiting_s=self._wait.observe(facts.status, facts.now)
                )
            conditions = evaluate(facts, self.settings)
            notes = self.state.transition(conditions, facts.now, self.settings)
        except Exception as exc:  # noqa: BLE001 - an alert failure never stops the daemon
            log.error("alert.check_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return []
        for note in notes:
            self._dispatch(note)
        self._redeliver()
        if self.state.changed:
            try:
                self.state.save(self.state_path, facts.now)
            except OSError as exc:
                log.warning(
                    "alert.state_failed",
                    path=str(self.state_path),
                    error=f"{type(exc).__name__}: {exc}",
                )
        self.checks += 1
        self.last_check_ms = round((time.perf_counter() - t0) * 1000, 3)
        return notes

    def _dispatch(self, note: Notification) -> None:
        for sink in self.sinks:
            try:
                if isinstance(sink, BackgroundSink):
                    self.outbox.supersede(sink.name, note.key)
                sink.send(note)
            except Exception as exc:  # noqa: BLE001 - one sink failing is not all
                log.error(
                    "alert.delivery_failed",
                    sink=getattr(sink, "name", type(sink).__name__),
                    key=note.key,
                    error=f"{type(exc).__name__}: {exc}",
                )

    def _redeliver(self) -> None:
        """Hand the outbox's notifications to their sinks again, when ``redeliver_after_s`` has
        passed since the last time (a sink still busy with its queue is left for later)."""
        now = time.monotonic()
        if now < self._next_redelivery:
            return
        self._next_redelivery = now + self.settings.redeliver_after_s
        for sink in self.sinks:
            if not isinstance(sink, BackgroundSink) or not sink.idle():
                continue
            try:
                notes = self.outbox.take(sink.name)
            except Exception as exc:  # noqa: BLE001 - an alert failure never stops the daemon
                log.error("alert.outbox_failed", sink=sink.name, error=str(exc)[:300])
                continue
            if notes:
                log.info("alert.redelivering", sink=sink.name, count=len(notes))
            for note in notes:
                sink.send(note)

    def active(self) -> list[dict[str, Any]]:
        """The firing conditions as the state has them (the CLI reads the file instead)."""
        return [e.as_dict() for e in self.state.firing()]

    def undelivered(self) -> dict[str, int]:
        """Per webhook or command sink, the notifications it gave up on (after its retries) or
        dropped unsent so far; sinks that lost none are left out."""
        lost = {
            sink.name: sink.failed + sink.dropped
            for sink in self.sinks
            if isinstance(sink, BackgroundSink)
        }
        return {name: n for name, n in lost.items() if n}

    def close(self, timeout: float = 5.0) -> None:
        """Let the background sinks deliver what they hold for up to ``timeout`` seconds in all,
        then stop their threads."""
        deadline = time.monotonic() + timeout
        for sink in self.sinks:  # all at once: each delivers in the same time
            if isinstance(sink, BackgroundSink):
                sink.start_close(timeout)
        for sink in self.sinks:
            try:
                sink.close(max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - closing the others matters more
                log.error("alert.close_failed", sink=getattr(sink, "name", "?"), error=str(exc))
