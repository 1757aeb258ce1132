"""The systemd notify protocol over a real AF_UNIX datagram socket (no systemd needed)."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from quantbot_bus.daemon.notify import Notifier


def recv_with_pid(sock: socket.socket, timeout: float = 5.0) -> tuple[str, int | None]:
    """One datagram and the sender pid from SCM_CREDENTIALS (needs SO_PASSCRED on ``sock``)."""
    sock.settimeout(timeout)
    size = struct.calcsize("3i")
    data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(size))
    pid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _uid, _gid = struct.unpack("3i", payload[:size])
    return data.decode(), pid


def bind_notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(str(path))
    return sock


@pytest.fixture
def short_tmp(tmp_path: Path) -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qbn-") as d:
        yield Path(d)


def test_from_env_reads_socket_and_watchdog() -> None:
    env = {
        "NOTIFY_SOCKET": "/run/x.sock",
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    n = Notifier.from_env(env)
    assert n.enabled
    assert n.socket_path == "/run/x.sock"
    assert n.watchdog_interval() == pytest.approx(1.0)


def test_watchdog_for_another_pid_is_ignored() -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval() is None


def test_without_notify_socket_everything_is_a_noop() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.send("READY=1") is False
    assert n.watchdog_interval() is None


def test_send_reaches_a_real_socket_with_our_pid(short_tmp: Path) -> None:
    path = short_tmp / "notify.sock"
    with bind_notify_socket(path) as server:
        n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
        assert n.send("READY=1\nSTATUS=registered 3, rejected 0, pending 0") is True
        message, pid = recv_with_pid(server)
        n.close()
    assert message == "READY=1\nSTATUS=registered 3, rejected 0, pending 0"
    assert pid == os.getpid()


def test_abstract_socket_address() -> None:
    name = f"quantbot-bus-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.send("WATCHDOG=1")
        server.settimeout(5)
        assert server.recv(100) == b"WATCHDOG=1"
        n.close()


def test_ready_is_kept_when_the_socket_is_late_and_sent_once_it_exists(short_tmp: Path) -> None:
    path = short_tmp / "late.sock"
    n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    with capture_logs() as logs:
        assert n.send("READY=1\nSTATUS=ready") is False
        assert n.send("STATUS=still no socket") is False  # logged once, not twice
    failed = [e for e in logs if e["event"] == "notify.failed"]
    assert len(failed) == 1
    assert failed[0]["will_retry"] is True
    with bind_notify_socket(path) as server:
        with capture_logs() as logs:
            n.retry()
        message, pid = recv_with_pid(server)
        assert message == "READY=1"
        assert pid == os.getpid()
        assert [e["event"] for e in logs] == ["notify.recovered"]
        # Owed lines are sent once only; the next message is just itself.
        assert n.send("WATCHDOG=1")
        assert recv_with_pid(server)[0] == "WATCHDOG=1"
        n.retry()  # nothing owed: sends nothing
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.recv(100)
    n.close()


def test_non_sticky_messages_are_not_replayed(short_tmp: Path) -> None:
    path = short_tmp / "n.sock"
    n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    assert n.send("WATCHDOG=1\nSTATUS=x") is False
    with bind_notify_socket(path) as server:
        assert n.send("STATUS=y")
        assert recv_with_pid(server)[0] == "STATUS=y"
    n.close()


def test_send_never_raises_on_a_bad_address() -> None:
    n = Notifier("/nonexistent/dir/sock")
    with capture_logs():
        assert n.send("READY=1") is False
    n.close()


def test_a_receiver_that_never_reads_does_not_block_the_sender(short_tmp: Path) -> None:
    """Once the receiver's queue is full, send() fails fast instead of hanging the daemon."""
    path = short_tmp / "n.sock"
    with bind_notify_socket(path) as server:
        n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
        with capture_logs() as logs:
            results = [n.send(f"STATUS=message {i} " + "x" * 200) for i in range(5000)]
        assert results[0] is True
        assert results[-1] is False  # the queue filled up: dropped, not blocked
        assert [e["event"] for e in logs] == ["notify.failed"]  # logged once
        assert recv_with_pid(server)[0].startswith("STATUS=message 0 ")
        n.close()
