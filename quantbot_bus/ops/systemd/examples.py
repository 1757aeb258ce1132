"""The rendered examples in the repository's ``systemd/`` directory: the units for one example
layout (config in /etc/quantbot-bus, data under /srv/quantbot-bus, user ``quantbot``), system and
user variants. Regenerate with ``python -m quantbot_bus.ops.systemd examples systemd``."""

from __future__ import annotations

import sys
from pathlib import Path

from .render import render_units, sandboxed_context

EXAMPLE_CONFIG = Path("/etc/quantbot-bus/quantbot-bus.toml")
EXAMPLE_EXECUTABLE = Path("/opt/quantbot-bus/venv/bin/quantbot-bus")


def example_units() -> dict[str, str]:
    """``{relative path: content}`` for ``systemd/``: the system and user variants for the
    example layout (config in /etc/quantbot-bus, data under /srv/quantbot-bus, user ``quantbot``)."""
    root = Path("/srv/quantbot-bus/artifacts")
    state_dir = Path("/srv/quantbot-bus/state")
    exports_dir = Path("/srv/quantbot-bus/exports")
    out: dict[str, str] = {}
    for user, prefix in ((False, ""), (True, "user/")):
        ctx = sandboxed_context(
            EXAMPLE_EXECUTABLE,
            EXAMPLE_CONFIG,
            root,
            state_dir,
            exports_dir,
            user=user,
            run_as=None if user else "quantbot",
        )
        for name, content in render_units(ctx).items():
            out[prefix + name] = content
    return out


def write_examples(dest: Path) -> list[Path]:
    """Write :func:`example_units` under ``dest`` (the repository's ``systemd/``)."""
    written = []
    for rel, content in example_units().items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str], prog: str = "python -m quantbot_bus.ops.systemd") -> None:
    """``PROG examples DIR``: write the examples under DIR and print each path."""
    if len(argv) != 2 or argv[0] != "examples":
        sys.exit(f"usage: {prog} examples DIR")
    for p in write_examples(Path(argv[1])):
        print(p)
