"""The static dashboard: ``quantbot-bus report`` writes one self-contained HTML page (inline CSS
and matplotlib SVG charts; no script, no URL: it opens from ``file://``) from the reader-side
publication only.

========================  ====================================================================
module                    its one responsibility
========================  ====================================================================
:mod:`.data`              read every section's numbers from ``catalog.*``/``exports.*``
:mod:`.sources`           the state dir's inputs: the daemon's status file, the open alerts
:mod:`.series`            a run's tearsheet series (cumulative, underwater, monthly, rolling
                          Sharpe) and the downsampling that bounds a chart's size
:mod:`.svg`               matplotlib figures as inline SVG (no pyplot, no external reference)
:mod:`.layout`            a figure's margins from the text it draws (no layout engine)
:mod:`.charts`            the section charts; :mod:`.tearsheet` the run tearsheet's
:mod:`.page`              the HTML skeleton and builders (escaping, tables, figures)
:mod:`.sections`          each section from the data
:mod:`.writer`            :func:`write_report`: gather, render, write atomically
:mod:`.settings`          ``[report]`` of the config: the daemon's refresh
:mod:`.schedule`          when the daemon or a ``sync`` rewrites the page (``report.json``)
========================  ====================================================================

Importing the package is cheap (the config imports :mod:`.settings`); matplotlib loads when a
page is first written.

docs/dashboard.md says what is on the page, why matplotlib SVG, and what it costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .writer import INDEX_NAME, ReportResult, default_out_dir, render_report, write_report


#: :mod:`.writer`'s public names, imported on first use (matplotlib loads with them).
__getattr__ = lazy_attributes(
    __name__,
    {"writer": ("INDEX_NAME", "ReportResult", "default_out_dir", "render_report", "write_report")},
)


__all__ = ["INDEX_NAME", "ReportResult", "default_out_dir", "render_report", "write_report"]
