"""Can the service user reach what its units run? Checked before any unit is written.

A system service runs as ``User=`` (``--run-as``); if that user cannot execute the
``quantbot-bus`` script and its interpreter, or cannot read the config file, the unit fails only
at start (``status=203/EXEC``, or a config error). :func:`access_problems` checks, for each of
those paths (as given and resolved), that every directory on the way is searchable by that user
and the file itself readable/executable, and names the first path that blocks and what to do.

When we are root and ``runuser`` exists the checks run *as that user* (``runuser -u USER --
test ...``: ACLs and every group count); otherwise they are computed from the mode bits, owner
and groups (:func:`_allowed`; ACLs are not read).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .render import UnitContext, needed_paths

#: One check: (``test`` operator, path): ``-x`` search a directory / execute a file, ``-r`` read.
_Check = tuple[str, Path]

_RUNUSER_SCRIPT = 'while [ "$#" -gt 1 ]; do test "$1" "$2" || printf "%s\\0" "$1 $2"; shift 2; done'


@dataclass(frozen=True)
class _Target:
    what: str  # "the quantbot-bus executable", ...
    path: Path
    ops: str  # what the file itself needs: "rx" (a script), "x" (the interpreter), "r"


def _targets(ctx: UnitContext) -> list[_Target]:
    """The executable (read + execute: a ``#!`` script is read by its interpreter), the
    interpreter (execute) and the config file (read), each as given and resolved."""
    paths = needed_paths(ctx.executable, ctx.config_path, ctx.root, ctx.state_dir, ctx.exports_dir)
    ops = {
        "the quantbot-bus executable": "rx",
        "the quantbot-bus executable (resolved)": "rx",
        "the Python interpreter": "x",
        "the Python interpreter (resolved)": "x",
        "the config file": "r",
    }
    return [_Target(what, paths[what], op) for what, op in ops.items() if what in paths]


def _checks(target: _Target) -> list[_Check]:
    """Search on every directory from ``/`` down to the file, then the file's own needs (of a
    symbolic link: none here, its resolved target is a target of its own)."""
    path = Path(os.path.abspath(target.path))
    checks: list[_Check] = [("-x", d) for d in reversed(path.parents)]
    if not path.is_symlink():
        checks += [(f"-{op}", path) for op in target.ops]
    return checks


def _user_ids(user: pwd.struct_passwd) -> tuple[int, set[int]]:
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    return user.pw_uid, groups


def _allowed(op: str, path: Path, uid: int, groups: set[int]) -> bool:
    """``test op path`` for ``uid``/``groups`` from the mode bits (follows symlinks; every
    directory on the way must be searchable, as for ``test``)."""
    real = Path(os.path.realpath(path))
    if any(not _permits("-x", d, uid, groups) for d in real.parents):
        return False
    return _permits(op, real, uid, groups)


def _permits(op: str, path: Path, uid: int, groups: set[int]) -> bool:
    """The mode bits of ``path`` alone allow ``op`` to ``uid``/``groups``."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if uid == 0:  # root reads anything; executes a file only with some x bit
        return op == "-r" or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    bits = {"-r": 4, "-x": 1}[op]
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid in groups:
        shift = 3
    else:
        shift = 0
    return bool((st.st_mode >> shift) & bits)


def _failing_as_user(user: str, checks: list[_Check]) -> set[_Check] | None:
    """The checks that fail when run as ``user`` (``runuser``), or None when that cannot run."""
    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None
    )
    if os.geteuid() != 0 or runuser is None:
        return None
    args = [str(a) for op, path in checks for a in (op, path)]
    try:
        proc = subprocess.run(
            [runuser, "-u", user, "--", "/bin/sh", "-c", _RUNUSER_SCRIPT, "sh", *args],
            capture_output=True,
            timeout=60,
            check=False,
            cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    failed = {item.decode("utf-8", "surrogateescape") for item in proc.stdout.split(b"\0") if item}
    return {c for c in checks if f"{c[0]} {c[1]}" in failed}


def _describe(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path} cannot be examined ({exc.strerror or exc})"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{path} is mode {stat.S_IMODE(st.st_mode):04o} (owner {owner}, group {group})"


def _advice(target: _Target, user: str) -> str:
    if "config" in target.what:
        return (
            f"move the config where {user} can read it (e.g. /etc/quantbot-bus/quantbot-bus.toml, "
            f"mode 0644, or chgrp {user} + chmod g+r), or pass --run-as root"
        )
    return (
        f"install quantbot-bus where {user} can read it, e.g. python3 -m venv "
        "/opt/quantbot-bus/venv && /opt/quantbot-bus/venv/bin/pip install quantbot-bus, then "
        "install with --executable /opt/quantbot-bus/venv/bin/quantbot-bus; or pass --run-as root"
    )


def access_problems(ctx: UnitContext) -> list[str]:
    """What the system service's user (``ctx.run_as``) cannot reach, one message per path (the
    first component that blocks it and what to do); ``[]`` when all is reachable, or for a user
    service (it runs as the installing user)."""
    if ctx.user or ctx.run_as is None:
        return []
    try:
        entry = pwd.getpwnam(ctx.run_as)
    except KeyError:
        return [
            f"user {ctx.run_as!r} does not exist: create it (useradd --system {ctx.run_as}) or "
            "pass --run-as with an existing user"
        ]
    targets = _targets(ctx)
    checks = list(dict.fromkeys(c for t in targets for c in _checks(t)))
    failed = _failing_as_user(ctx.run_as, checks)
    if failed is None:
        uid, groups = _user_ids(entry)
        failed = {c for c in checks if not _allowed(c[0], c[1], uid, groups)}
    problems: list[str] = []
    blocked: set[Path] = set()
    for target in targets:
        blocking = next((c for c in _checks(target) if c in failed), None)
        if blocking is None or blocking[1] in blocked:
            continue  # reachable, or blocked by a path already named
        op, path = blocking
        blocked.add(path)
        if path != Path(os.path.abspath(target.path)):
            why = f"the {ctx.run_as} user cannot reach {target.path}"
        else:
            why = f"the {ctx.run_as} user cannot {'read' if op == '-r' else 'execute'} it"
        problems.append(f"{_describe(path)}: {why} ({target.what}); {_advice(target, ctx.run_as)}")
    return problems
