"""``write_report``: gather, render and write the dashboard, atomically.

The report is one self-contained file, ``index.html`` (inline CSS and SVG, no script, no URL:
it opens from ``file://``), replaced with :func:`~quantbot_bus.fsutil.write_atomic` (a temp file
in the same directory, fsync, rename): a browser that loads it during a refresh sees the old page
or the new one, never half of one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..fsutil import write_atomic
from ..log import get_logger
from ..timeutil import iso_utc
from .data import gather
from .page import render
from .sections import all_sections

log = get_logger(__name__)

#: The page's file name in the report directory.
INDEX_NAME = "index.html"


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote: the page, every file, their bytes and the seconds it
    took (gather + render + write)."""

    path: Path
    files: tuple[Path, ...]
    bytes: int
    seconds: float


def default_out_dir(config: Config) -> Path:
    """Where the report goes by default: ``exports_dir/report/``."""
    return config.exports_dir / "report"


def render_report(config: Config, run_id: str | None = None) -> str:
    """The dashboard's HTML for the publication as it is now (``run_id``: the tearsheet's run,
    default the newest policy run)."""
    data = gather(config, run_id)
    gen = (data.status or {}).get("generation")
    subtitle = f"generated {iso_utc()} from {config.exports_dir.absolute()}" + (
        f" (generation {gen})" if gen else ""
    )
    return render(all_sections(data), subtitle=subtitle)


def write_report(
    config: Config, out_dir: Path | None = None, *, run_id: str | None = None
) -> ReportResult:
    """Write the dashboard to ``out_dir`` (default ``exports_dir/report/``) as ``index.html``,
    atomically; logs ``report.written``. An unknown ``run_id`` raises
    :class:`~quantbot_bus.errors.NotFoundError` before anything is written."""
    start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_out_dir(config)
    text = render_report(config, run_id)
    out.mkdir(parents=True, exist_ok=True)
    path = out / INDEX_NAME
    write_atomic(path, text)
    size = len(text.encode("utf-8"))
    seconds = time.perf_counter() - start
    log.info("report.written", path=str(path), bytes=size, ms=round(seconds * 1000, 1))
    return ReportResult(path=path, files=(path,), bytes=size, seconds=seconds)
