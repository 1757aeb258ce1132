"""matplotlib figures as inline SVG for the dashboard: no script, no external reference.

:func:`figure` makes a figure without pyplot (no global figure registry: safe in the daemon's
threads) and without a layout engine; :func:`to_svg` sets its margins from the text it draws
(:func:`quantbot_bus.report.layout.fit`), then renders it with text kept as text
(``svg.fonttype = none``: small, and the labels are in the DOM), deterministic ids
(``svg.hashsalt``), and then drops what an inline SVG in an HTML page does not need: the XML
prolog, the DOCTYPE, the RDF metadata block and the namespace declarations (the HTML parser knows
``svg`` and ``xlink:href``), so the page names no URL at all, the pretty-printing whitespace, and
the digits of coordinates past 1/100 pt (together about half of the bytes). Each chart's ids get a
prefix of its own, so the ids of two charts on one page never clash. matplotlib escapes every
text it writes (``<``, ``>``, ``&``, quotes).
"""

from __future__ import annotations

import io
import re
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from .layout import fit

#: One palette for every chart (colour-blind safe: Okabe–Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
GOOD, BAD, MUTED = "#009E73", "#D55E00", "#9a9a9a"

_RC: Any = {  # matplotlib types its keys as literals
    "svg.fonttype": "none",
    "svg.hashsalt": "quantbot-bus-report",
    "text.parse_math": False,  # a name with two $ is text, not a formula
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # one name in every text's style, not eleven
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 7.0,
    "legend.frameon": False,
}

_PROLOG = re.compile(r"<\?xml[^>]*>\s*|<!DOCTYPE[^>]*>\s*", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_NAMESPACES = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_SIZE = re.compile(r'(<svg[^>]*?)\s+(width="[^"]*"\s+height="[^"]*")')
_GROUP_ID = re.compile(r'<g id="[^"]*"')
_NO_ROTATION = re.compile(r'\s+transform="rotate\(-?0 [^"]*\)"')
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)')
_GEOMETRY = re.compile(r'\b(d|x|y|x1|x2|y1|y2|width|height|transform)="([^"]*)"')
_LONG_DECIMAL = re.compile(r"(\.\d{2})\d+")
_BETWEEN_TAGS = re.compile(r">\s+<")
_PATH_BREAKS = re.compile(r" ?\n(?=[MLCQZz])")


def styled() -> Any:
    """A context with the dashboard's style: make and draw every chart inside it (matplotlib
    reads its settings when an axes, a line or a title is made)."""
    return matplotlib.rc_context(_RC)


def figure(
    width: float = 7.5, height: float = 2.6, nrows: int = 1, ncols: int = 1, **kw: Any
) -> tuple[Figure, Any]:
    """A figure of ``width`` x ``height`` inches and its axes (``Figure.subplots``), made
    without pyplot; call inside :func:`styled`."""
    fig = Figure(figsize=(width, height), layout=None)  # margins: layout.fit, in to_svg
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _round(m: re.Match[str]) -> str:
    """A geometry attribute with its numbers cut to 2 decimals (1/100 pt: invisible)."""
    value = _LONG_DECIMAL.sub(r"\1", m.group(2))
    return f'{m.group(1)}="{value}"'


def to_svg(fig: Figure, chart_id: str, *, natural: bool = False) -> str:
    """``fig`` as an inline ``<svg>`` element whose ids are prefixed with ``chart_id``.

    Without a size of its own the element takes the width of its box on the page (the page's
    CSS: ``max-width:100%; height:auto``), its height following the ``viewBox``; ``natural``
    keeps the figure's ``width``/``height`` (in pt), so it is drawn at its own size, never
    wider, and shrinks (keeping its aspect) only where the page is narrower: for a small chart
    that scaled to the page's width would be blown up far beyond the size its text was set
    for."""
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fit(fig)
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = _PROLOG.sub("", text)
    text = _METADATA.sub("", text)
    text = _NAMESPACES.sub("", text)
    size = r" \2" if natural else ""
    text = _SIZE.sub(rf'\1{size} class="plot" role="img"', text, count=1)
    text = _GROUP_ID.sub("<g", text)  # group names: never referenced
    text = _NO_ROTATION.sub("", text)
    text = _ID.sub(lambda m: f'id="{chart_id}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{chart_id}-", text)
    text = _PATH_BREAKS.sub(" ", text)  # path data: one line
    text = _GEOMETRY.sub(_round, text)
    return _BETWEEN_TAGS.sub("><", text).strip()  # the pretty-printing between elements
