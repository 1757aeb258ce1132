"""The webhook sink: an HTTP POST of each notification's JSON, on its own thread.

Each attempt has ``timeout_s``; a connection error, a timeout, a 5xx or a 429 is retried up to
``retries`` times after ``backoff_s`` doubling up to ``max_backoff_s`` (``alert.webhook_retry``);
any other 4xx is not (the receiver refuses the request: retrying would not change that). The
outcome is logged: ``alert.webhook_sent`` or ``alert.webhook_failed``; a notification given up on
is handed to :meth:`~.background.BackgroundSink.lost` (kept in the outbox and sent again later:
:mod:`.outbox`). Headers: ``Content-Type:
application/json``, ``User-Agent: quantbot-bus``, ``Idempotency-Key`` (the same for every
attempt of one notification, so a receiver can drop a duplicate of an attempt that timed out
after it was processed) and those of ``[alerts.webhook.headers]``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.request

from ..log import get_logger
from .background import BackgroundSink
from .model import Notification
from .settings import WebhookSettings

log = get_logger("quantbot_bus.alerts")

_MAX_RESPONSE = 64 * 1024  # bytes of a response body read (and ignored)


def idempotency_key(note: Notification) -> str:
    """One notification's id: the same for each of its attempts, new for the next one."""
    text = f"{note.key}\0{note.status}\0{note.at}\0{note.reminder}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class WebhookSink(BackgroundSink):
    """POSTs notifications to ``settings.url`` (see module doc)."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._opener = urllib.request.build_opener()
        super().__init__(settings.queue_size)

    def deliver(self, note: Notification) -> None:
        s = self.settings
        body = json.dumps(note.as_dict(), sort_keys=True, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "quantbot-bus",
            "Idempotency-Key": idempotency_key(note),
            **dict(s.headers),
        }
        delay = s.backoff_s
        attempts = s.retries + 1
        attempt, error = 0, "closed before the first attempt"
        for attempt in range(1, attempts + 1):
            timeout = s.timeout_s
            left = self.remaining()
            if left is not None:
                if left <= 0:
                    break
                timeout = min(timeout, left)
            request = urllib.request.Request(s.url, data=body, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=timeout) as response:
                    response.read(_MAX_RESPONSE)
                    code = response.status
            except urllib.error.HTTPError as exc:
                with exc:
                    retryable = exc.code >= 500 or exc.code == 429
                    error = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                retryable = True
                reason = getattr(exc, "reason", None)
                error = f"{type(exc).__name__}: {reason if reason is not None else exc}"
            else:
                self.delivered += 1
                log.info(
                    "alert.webhook_sent",
                    key=note.key,
                    status=note.status,
                    http_status=code,
                    attempt=attempt,
                )
                return
            if not retryable or attempt == attempts:
                break
            log.info(
                "alert.webhook_retry",
                key=note.key,
                attempt=attempt,
                error=error,
                retry_in_s=round(delay, 3),
            )
            if not self.pause(delay):
                break
            delay = min(s.max_backoff_s, delay * 2)
        self.failed += 1
        log.warning(
            "alert.webhook_failed",
            key=note.key,
            status=note.status,
            url=s.url,
            attempts=attempt,
            error=error,
        )
        self.lost(note)
