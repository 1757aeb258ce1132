"""doctor's permission checks, as an unprivileged user (root bypasses permission bits): an
unwritable state dir or catalog file, unreadable directories below the root or the root itself;
real directories and DuckDB files."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_catalog

from quantbot_bus.config import Config
from quantbot_bus.ops import doctor


def as_unprivileged(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` where permission bits apply: in place when not root; as root, in a forked
    child that drops to nobody (65534) first, returning its JSON-able result."""
    if os.geteuid() != 0:
        return fn()
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            payload = json.dumps(fn()).encode()
        except BaseException as exc:  # report anything to the parent
            payload = json.dumps({"child_error": repr(exc)}).encode()
            code = 1
        with os.fdopen(write_fd, "wb") as fh:
            fh.write(payload)
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data)
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


@pytest.fixture
def open_bus() -> Iterator[Config]:
    """A bus in a world-traversable temp dir (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="qb-doctor-"))
    try:
        base.chmod(0o755)
        cfg = Config(
            root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state"
        ).validate()
        for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
            d.mkdir()
            d.chmod(0o755)
        yield cfg
    finally:
        for d in base.rglob("*"):
            if d.is_dir():
                d.chmod(0o755)
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_unwritable_state_and_unreadable_subdir_fail(open_bus: Config) -> None:
    cfg = open_bus
    (cfg.root / "ok_run").mkdir(mode=0o755)
    secret = cfg.root / "private"
    secret.mkdir()
    (secret / "hidden_run").mkdir()
    secret.chmod(0o700)
    cfg.state_dir.chmod(0o555)
    cfg.exports_dir.chmod(0o777)

    def checks() -> dict[str, dict[str, Any]]:
        scan = doctor.scan_tree(cfg.root)
        return {
            "root": doctor.check_root(cfg, scan).as_dict(),
            "state_dir": doctor.check_writable("state_dir", cfg.state_dir).as_dict(),
            "exports_dir": doctor.check_writable("exports_dir", cfg.exports_dir).as_dict(),
        }

    got = as_unprivileged(checks)
    assert got["root"]["status"] == "fail"
    assert f"e.g. {secret}" in got["root"]["detail"]
    assert "cannot be listed" in got["root"]["detail"]
    assert "chmod -R g+rX,o+rX" in got["root"]["fix"]
    assert got["state_dir"]["status"] == "fail"
    assert got["state_dir"]["detail"].startswith(f"{cfg.state_dir} is not writable by ")
    assert "chown" in got["state_dir"]["fix"]
    assert got["exports_dir"]["status"] == "ok"


def test_unreadable_root_fails(open_bus: Config) -> None:
    open_bus.root.chmod(0o700)
    got = as_unprivileged(lambda: doctor.check_root(open_bus, None).as_dict())
    assert got["status"] == "fail"
    assert got["detail"].startswith(f"artifacts root {open_bus.root} cannot be listed by ")


def test_a_working_catalog_that_is_not_writable_fails(open_bus: Config) -> None:
    make_catalog(open_bus)
    open_bus.state_dir.chmod(0o777)  # the directory is writable for everyone...
    open_bus.catalog_path.chmod(0o444)  # ...the catalog file in it is not
    got = as_unprivileged(
        lambda: doctor.check_writable(
            "state_dir", open_bus.state_dir, (open_bus.catalog_path,)
        ).as_dict()
    )
    assert got["status"] == "fail"
    assert got["detail"].startswith(f"{open_bus.catalog_path} is not writable by ")
