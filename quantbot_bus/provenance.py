"""Where a run comes from: its default run id and the git state of the producer's work tree."""

from __future__ import annotations

import datetime as dt
import secrets
import subprocess
from pathlib import Path
from typing import Any

from .timeutil import utc_now


def default_run_id(run_type: str, now: dt.datetime | None = None) -> str:
    """``<run_type>-<UTC yyyymmddTHHMMSS>-<8 hex>``, e.g. ``backtest-20260108T120000-1f2e3d4c``."""
    now = utc_now() if now is None else now
    return f"{run_type}-{now.astimezone(dt.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def git_info(cwd: Path | None = None) -> dict[str, Any] | None:
    """Commit, branch and dirty flag of the git work tree around ``cwd``; None when unavailable."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    if git("rev-parse", "--is-inside-work-tree") != "true":
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None  # a repository without commits yet
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    info: dict[str, Any] = {"commit": commit}
    if branch and branch != "HEAD":
        info["branch"] = branch
    if status is not None:
        info["dirty"] = bool(status)
    return info
