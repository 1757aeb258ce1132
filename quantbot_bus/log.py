"""Logging, configured once: JSON lines when stderr is not a terminal (journald), console otherwise.

Stable event names (documented in docs/operations.md): ``run.registered``, ``run.updated``,
``run.deleted``, ``run.pending``, ``run.rejected``, ``batch.committed``, ``rescan.done``,
``watch.overflow``, ``daemon.ready``, ``daemon.stopping``, ``export.failed``...
The standard-library ``logging`` records (watchdog's among them) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog and stdlib logging. ``fmt``: auto | json | console."""
    global _configured
    stream = sys.stderr if stream is None else stream
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_quantbot_bus", False):
            root.removeHandler(old)
    handler._quantbot_bus = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    _configured = True


def get_logger(name: str = "quantbot_bus", **bound: Any) -> Any:
    """A structlog logger; bind ``run_id=...`` etc. for context."""
    return structlog.get_logger(name).bind(**bound) if bound else structlog.get_logger(name)
