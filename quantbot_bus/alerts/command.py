"""The command hook: runs ``[alerts.command] argv`` once per notification, on its own thread.

The program gets the notification's JSON on stdin (one object, then a newline) and, in its
environment, ``QUANTBOT_BUS_ALERT_KEY``, ``QUANTBOT_BUS_ALERT_STATUS`` (``firing`` or
``resolved``) and ``QUANTBOT_BUS_ALERT_SEVERITY``. No shell: ``argv[0]`` is the program. It is
killed after ``timeout_s``. A non-zero exit, a timeout or a program that cannot be started is
logged (``alert.command_failed``, with the end of its stderr) and not retried; exit 0 is
``alert.command_ran``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess

from ..log import get_logger
from .background import BackgroundSink
from .model import Notification
from .settings import CommandSettings

log = get_logger("quantbot_bus.alerts")

_STDERR_TAIL = 500  # characters of the program's stderr kept in the log


class CommandSink(BackgroundSink):
    """Runs ``settings.argv`` with each notification on stdin (see module doc)."""

    name = "command"

    def __init__(self, settings: CommandSettings) -> None:
        self.settings = settings
        super().__init__(settings.queue_size)

    def deliver(self, note: Notification) -> None:
        s = self.settings
        data = (json.dumps(note.as_dict(), sort_keys=True, default=str) + "\n").encode()
        env = {
            **os.environ,
            "QUANTBOT_BUS_ALERT_KEY": note.key,
            "QUANTBOT_BUS_ALERT_STATUS": note.status,
            "QUANTBOT_BUS_ALERT_SEVERITY": note.severity,
        }
        timeout = s.timeout_s
        left = self.remaining()
        if left is not None:
            timeout = max(0.1, min(timeout, left))
        try:
            returncode, stderr = _run(list(s.argv), data, env, timeout)
        except subprocess.TimeoutExpired:
            self.failed += 1
            log.warning(
                "alert.command_failed",
                key=note.key,
                argv=list(s.argv),
                error=f"timed out after {timeout:g} s (killed)",
            )
            return
        except OSError as exc:
            self.failed += 1
            log.warning(
                "alert.command_failed",
                key=note.key,
                argv=list(s.argv),
                error=f"cannot run it: {type(exc).__name__}: {exc}",
            )
            return
        if returncode != 0:
            self.failed += 1
            log.warning(
                "alert.command_failed",
                key=note.key,
                argv=list(s.argv),
                returncode=returncode,
                stderr=stderr,
            )
            return
        self.delivered += 1
        log.info("alert.command_ran", key=note.key, status=note.status, argv=list(s.argv))


def _run(argv: list[str], data: bytes, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` in a session of its own with ``data`` on stdin; its exit code and the end of
    its stderr. On timeout the whole session is killed (what it started too) and
    :class:`subprocess.TimeoutExpired` raised."""
    with subprocess.Popen(  # noqa: S603 - argv from the operator's config, no shell
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            _, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return proc.returncode, err.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
