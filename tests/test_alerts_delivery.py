"""Alert delivery to real receivers: a local HTTP server (up, down, slow, failing then fine) for
the webhook, and real programs for the command hook. The caller is never held up: ``check()``
returns while the receiver is still slow or down."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from builders import wait_for
from receiver import Receiver, closed_port_url
from structlog.testing import capture_logs

from quantbot_bus.alerts import Alerter, AlertSettings, CommandSettings, Facts, WebhookSettings
from quantbot_bus.alerts.command import CommandSink
from quantbot_bus.alerts.model import Notification
from quantbot_bus.alerts.webhook import WebhookSink, idempotency_key
from quantbot_bus.timeutil import iso_utc, utc_now


def note(key: str = "degraded", status: str = "firing") -> Notification:
    now = iso_utc()
    return Notification(
        key=key,
        rule="degraded",
        severity="critical",
        status=status,
        message="the catalog is degraded: publish failed",
        details={"degraded": "publish failed"},
        first_seen_at=now,
        at=now,
    )


def status(reason: str | None) -> dict[str, Any]:
    return {"pid": os.getpid(), "pending": 0, "last_batch_at": iso_utc(), "degraded": reason}


def webhook_alerter(tmp_path: Path, **webhook: Any) -> Alerter:
    settings = AlertSettings(
        rules=("degraded",), min_interval_s=0, webhook=WebhookSettings(**webhook)
    )
    return Alerter(settings, tmp_path / "alerts.json", tmp_path / "alerts.jsonl")


def timed_check(alerter: Alerter, facts: Facts) -> tuple[list[Notification], float]:
    t0 = time.perf_counter()
    notes = alerter.check(facts)
    return notes, time.perf_counter() - t0


# ---------------------------------------------------------------------------- webhook


def test_webhook_receives_the_firing_and_the_resolution(tmp_path: Path, receiver: Receiver) -> None:
    alerter = webhook_alerter(tmp_path, url=receiver.url)
    [fired] = alerter.check(Facts(now=utc_now(), status=status("publish failed: OSError: x")))
    wait_for(lambda: receiver.count() == 1, "the firing POST")
    [resolved] = alerter.check(Facts(now=utc_now(), status=status(None)))
    wait_for(lambda: receiver.count() == 2, "the resolution POST")
    alerter.close(5)
    first, second = receiver.requests
    assert first["body"] == fired.as_dict() and second["body"] == resolved.as_dict()
    assert (first["body"]["event"], second["body"]["event"]) == ("alert.fired", "alert.resolved")
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["headers"]["Idempotency-Key"] == idempotency_key(fired)
    assert first["headers"]["Idempotency-Key"] != second["headers"]["Idempotency-Key"]


def test_webhook_headers_from_the_settings(receiver: Receiver) -> None:
    sink = WebhookSink(WebhookSettings(url=receiver.url, headers=(("Authorization", "Bearer t"),)))
    sink.send(note())
    wait_for(lambda: sink.delivered == 1, "the POST")
    sink.close(5)
    assert receiver.requests[0]["headers"]["Authorization"] == "Bearer t"


def test_webhook_500_then_200_is_retried_and_delivered_once(receiver: Receiver) -> None:
    receiver.codes = [500]
    sink = WebhookSink(WebhookSettings(url=receiver.url, retries=3, backoff_s=0.05))
    with capture_logs() as logs:
        sink.send(note())
        wait_for(lambda: sink.delivered == 1, "the delivery after a 500")
        sink.close(5)
    assert receiver.count() == 2 and sink.failed == 0
    keys = {r["headers"]["Idempotency-Key"] for r in receiver.requests}
    assert len(keys) == 1  # the same notification, twice attempted
    events = [e["event"] for e in logs if e["event"].startswith("alert.webhook")]
    assert events == ["alert.webhook_retry", "alert.webhook_sent"]
    retry = next(e for e in logs if e["event"] == "alert.webhook_retry")
    assert "HTTP 500" in retry["error"] and retry["attempt"] == 1


def test_webhook_4xx_is_not_retried(receiver: Receiver) -> None:
    receiver.codes = [400]
    sink = WebhookSink(WebhookSettings(url=receiver.url, retries=3, backoff_s=0.05))
    with capture_logs() as logs:
        sink.send(note())
        wait_for(lambda: sink.failed == 1, "the refusal")
        sink.close(5)
    assert receiver.count() == 1
    [failed] = [e for e in logs if e["event"] == "alert.webhook_failed"]
    assert failed["attempts"] == 1 and "HTTP 400" in failed["error"]


def test_webhook_down_is_retried_then_given_up_without_holding_the_caller(tmp_path: Path) -> None:
    alerter = webhook_alerter(tmp_path, url=closed_port_url(), retries=2, backoff_s=0.05)
    with capture_logs() as logs:
        notes, took = timed_check(alerter, Facts(now=utc_now(), status=status("publish failed: x")))
        sink = next(s for s in alerter.sinks if isinstance(s, WebhookSink))
        wait_for(lambda: sink.failed == 1, "the webhook to give up")
        alerter.close(5)
    assert len(notes) == 1 and took < 0.5
    [failed] = [e for e in logs if e["event"] == "alert.webhook_failed"]
    assert failed["attempts"] == 3 and "Connection refused" in failed["error"]
    assert sum(e["event"] == "alert.webhook_retry" for e in logs) == 2
    # the other sinks got it all the same
    assert json.loads((tmp_path / "alerts.jsonl").read_text())["key"] == "degraded"


def test_a_notification_the_webhook_gave_up_on_is_sent_again_at_a_later_check(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Kept in the outbox (state dir) and handed to the webhook again once
    ``redeliver_after_s`` has passed: by the same alerter, or by the next process's."""
    receiver.codes = [500, 503]
    settings = AlertSettings(
        rules=("degraded",),
        min_interval_s=0,
        redeliver_after_s=3600,
        webhook=WebhookSettings(url=receiver.url, retries=0),
    )
    alerter = Alerter(settings, tmp_path / "alerts.json", tmp_path / "alerts.jsonl")
    [fired] = alerter.check(Facts(now=utc_now(), status=status("publish failed: x")))
    sink = next(s for s in alerter.sinks if isinstance(s, WebhookSink))
    wait_for(lambda: sink.failed == 1, "the webhook to give up (HTTP 500)")
    alerter.check(Facts(now=utc_now(), status=status("publish failed: x")))
    assert receiver.count() == 1  # within redeliver_after_s: left in the outbox
    alerter.close(5)  # the process stops

    with capture_logs() as logs:
        for outcome in ("failed", "delivered"):  # the next two processes: 503, then 200
            again = Alerter(settings, tmp_path / "alerts.json", tmp_path / "alerts.jsonl")
            assert again.check(Facts(now=utc_now(), status=status("publish failed: x"))) == []
            sink = next(s for s in again.sinks if isinstance(s, WebhookSink))

            def counted(s: WebhookSink = sink, o: str = outcome) -> bool:
                return getattr(s, o) == 1

            wait_for(counted, f"the redelivery {outcome}")
            again.close(5)
    assert [r["body"] for r in receiver.requests] == [fired.as_dict()] * 3
    assert {r["headers"]["Idempotency-Key"] for r in receiver.requests} == {idempotency_key(fired)}
    assert [e["count"] for e in logs if e["event"] == "alert.redelivering"] == [1, 1]
    assert not (tmp_path / "alerts-outbox.json").exists()


def test_a_kept_firing_is_dropped_when_its_resolution_goes_out(
    tmp_path: Path, receiver: Receiver
) -> None:
    alerter = webhook_alerter(tmp_path, url=closed_port_url(), retries=0)
    alerter.check(Facts(now=utc_now(), status=status("publish failed: x")))
    sink = next(s for s in alerter.sinks if isinstance(s, WebhookSink))
    wait_for(lambda: sink.failed == 1, "the webhook to give up")
    alerter.close(5)
    outbox = tmp_path / "alerts-outbox.json"
    assert [n["status"] for n in json.loads(outbox.read_text())["sinks"]["webhook"]] == ["firing"]

    later = webhook_alerter(tmp_path, url=receiver.url)  # its check sends the resolution first
    [resolved] = later.check(Facts(now=utc_now(), status=status(None)))
    wait_for(lambda: receiver.count() == 1, "the resolution")
    later.close(5)
    assert [r["body"] for r in receiver.requests] == [resolved.as_dict()]
    assert not outbox.exists()


def test_webhook_slow_is_timed_out_retried_and_never_blocks_check(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.delay_s = 30.0  # far beyond the timeout: released when the test ends
    alerter = webhook_alerter(tmp_path, url=receiver.url, timeout_s=0.3, retries=1, backoff_s=0.05)
    with capture_logs() as logs:
        notes, took = timed_check(alerter, Facts(now=utc_now(), status=status("publish failed: x")))
        [resolved], took2 = timed_check(alerter, Facts(now=utc_now(), status=status(None)))
        sink = next(s for s in alerter.sinks if isinstance(s, WebhookSink))
        wait_for(lambda: sink.failed >= 1, "the first notification to time out twice")
        t0 = time.perf_counter()
        alerter.close(1.0)
        closed_in = time.perf_counter() - t0
    assert len(notes) == 1 and took < 0.5 and took2 < 0.5
    assert receiver.count() >= 2  # the first notification: its attempt and its retry
    failed = [e for e in logs if e["event"] == "alert.webhook_failed"]
    assert failed[0]["attempts"] == 2 and "timed out" in failed[0]["error"]
    assert closed_in < 3.0  # bounded by close's timeout (+ the join's margin), not by the server


def test_a_full_queue_drops_the_oldest(receiver: Receiver) -> None:
    receiver.delay_s = 30.0
    sink = WebhookSink(WebhookSettings(url=receiver.url, timeout_s=5, retries=0, queue_size=1))
    with capture_logs() as logs:
        sink.send(note("first"))
        wait_for(lambda: receiver.count() == 1, "the first POST to be in flight")
        sink.send(note("second"))
        sink.send(note("third"))  # the queue holds one: "second" goes
        receiver.release.set()
        wait_for(lambda: sink.delivered == 2, "first and third to be delivered")
        sink.close(5)
    dropped = [e for e in logs if e["event"] == "alert.dropped"]
    assert [(e["key"], e["reason"]) for e in dropped] == [("second", "queue full")]
    assert [r["body"]["key"] for r in receiver.requests] == ["first", "third"]


def test_close_delivers_what_is_queued(receiver: Receiver) -> None:
    sink = WebhookSink(WebhookSettings(url=receiver.url))
    for i in range(5):
        sink.send(note(f"k{i}"))
    sink.close(10)
    assert sink.delivered == 5 and receiver.count() == 5
    with capture_logs() as logs:
        sink.send(note("late"))
    assert logs[0]["event"] == "alert.dropped" and logs[0]["reason"] == "sink closed"


# ---------------------------------------------------------------------------- command


def test_command_gets_the_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    settings = AlertSettings(
        rules=("degraded",),
        min_interval_s=0,
        command=CommandSettings(argv=("sh", "-c", f"cat > {out}")),
    )
    alerter = Alerter(settings, tmp_path / "alerts.json", tmp_path / "alerts.jsonl")
    with capture_logs() as logs:
        [fired], took = timed_check(
            alerter, Facts(now=utc_now(), status=status("publish failed: x"))
        )
        alerter.close(10)
    assert took < 0.5
    assert out.read_text() == json.dumps(fired.as_dict(), sort_keys=True) + "\n"
    assert any(e["event"] == "alert.command_ran" for e in logs)


def test_command_environment_names_the_alert(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    script = f'echo "$QUANTBOT_BUS_ALERT_KEY $QUANTBOT_BUS_ALERT_STATUS $QUANTBOT_BUS_ALERT_SEVERITY" > {out}'
    sink = CommandSink(CommandSettings(argv=("sh", "-c", script)))
    sink.send(note("disk_low:/srv", "resolved"))
    sink.close(10)
    assert out.read_text() == "disk_low:/srv resolved critical\n"


def test_command_failure_and_timeout_are_logged(tmp_path: Path) -> None:
    failing = CommandSink(
        CommandSettings(argv=("sh", "-c", "cat >/dev/null; echo oops >&2; exit 3"))
    )
    hanging = CommandSink(CommandSettings(argv=("sh", "-c", "sleep 30 & wait"), timeout_s=0.3))
    missing = CommandSink(CommandSettings(argv=(str(tmp_path / "no-such-program"),)))
    with capture_logs() as logs:
        t0 = time.perf_counter()
        for sink in (failing, hanging, missing):
            sink.send(note())
        for sink in (failing, hanging, missing):
            sink.close(10)
        took = time.perf_counter() - t0
    failed = [e for e in logs if e["event"] == "alert.command_failed"]
    by_prog = {e["argv"][-1]: e for e in failed}
    assert by_prog["cat >/dev/null; echo oops >&2; exit 3"]["returncode"] == 3
    assert by_prog["cat >/dev/null; echo oops >&2; exit 3"]["stderr"] == "oops"
    assert "timed out after 0.3 s" in by_prog["sleep 30 & wait"]["error"]
    assert "cannot run it" in by_prog[str(tmp_path / "no-such-program")]["error"]
    assert took < 5.0  # the hung hook (and its child) was killed at its timeout
    assert (failing.failed, hanging.failed, missing.failed) == (1, 1, 1)
