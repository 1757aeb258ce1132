"""What every doctor check shares: the :class:`Check` record, its text form, where the checks
look on this machine (``/proc``) and the wording helpers of their messages."""

from __future__ import annotations

import os
import pwd
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OK, WARN, FAIL = "ok", "warn", "fail"

PROC = Path("/proc")


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``status`` is ``ok``, ``warn`` or ``fail``; ``fix`` when not ok."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """False only for a failure (a warning still counts as ok for the exit code)."""
        return self.status != FAIL

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_checks(checks: list[Check]) -> str:
    """``ok|WARN|FAIL name: detail`` per check, an indented ``fix:`` line when not ok."""
    label = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"{label[c.status]} {c.name}: {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"     fix: {c.fix}")
    return "\n".join(lines) + "\n"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def user() -> str:
    """The name of the user running the checks (its uid when it has no name)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def dirs(n: int) -> str:
    """``1 directory`` / ``N directories``."""
    return f"{n} directory" if n == 1 else f"{n} directories"


def human(n: float) -> str:
    """A byte count in B, KiB, MiB, GiB or TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
