"""The margins of a dashboard figure, from the text it will draw: no layout engine.

matplotlib's layout engines find the margins by laying the whole figure out before the real draw
(``constrained`` twice, with a hidden draw first; ``tight`` with that hidden draw too), which is
about half of the time a chart takes. :func:`fit` instead sizes what lies outside each axes from
the strings the axes are about to draw, measured with the font's own metrics (FreeType, as the SVG
backend measures them): the tick labels (from the axis's locator and formatter at its final view
limits, rotated as they will be), the axis labels, the offset text ("1e6") and the title; then
sets :meth:`~matplotlib.figure.Figure.subplots_adjust` so that all of it fits inside the figure
with :data:`PAD` to spare, and no more. Legends and texts inside an axes need no margin.

It handles the dashboard's grids: one row of axes (twins share their column), linear or date
axes, labels on any side. Call it last, when everything is drawn on the figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import matplotlib
from matplotlib import cbook
from matplotlib.axis import Axis
from matplotlib.font_manager import FontProperties, findfont, get_font
from matplotlib.text import Text
from matplotlib.textpath import text_to_path

#: Space (points) kept between the outermost text and the figure's edge; twice that between two
#: panels' texts.
PAD = 4.0
#: Added to every measured text (points): the browser draws the same font, but rounds its own way.
SLACK = 1.0
#: The smallest axes (inches) a figure keeps, whatever its labels.
MIN_AXES = 0.4


@dataclass
class Extent:
    """How far (points) an axes' texts reach beyond each side of its box (``left``/``right``
    include the x tick labels that overhang the box's ends)."""

    left: float = 0.0
    right: float = 0.0
    bottom: float = 0.0
    top: float = 0.0

    def merge(self, other: Extent) -> None:
        self.left = max(self.left, other.left)
        self.right = max(self.right, other.right)
        self.bottom = max(self.bottom, other.bottom)
        self.top = max(self.top, other.top)


@lru_cache(maxsize=64)
def _line(prop: FontProperties) -> tuple[float, float]:
    """The font's ascent and descent (points) at ``prop``'s size: the least a line of text
    takes (matplotlib's :class:`~matplotlib.text.Text` reads them from the same tables)."""
    font = get_font(findfont(prop))
    size = prop.get_size_in_points()
    head = font.get_sfnt_table("head")
    scale = size / (head["unitsPerEm"] if head else 1000)
    os2 = font.get_sfnt_table("OS/2")
    if os2:
        return os2["sTypoAscender"] * scale, -os2["sTypoDescender"] * scale
    hhea = font.get_sfnt_table("hhea")
    if hhea:
        return hhea["ascent"] * scale, -hhea["descent"] * scale
    return 0.8 * size, 0.2 * size


@lru_cache(maxsize=8192)
def _measure(text: str, prop: FontProperties) -> tuple[float, float, float]:
    """Width, ascent and descent (points) of one line of ``text`` in ``prop``, as the SVG backend
    measures it (FreeType, unhinted), plus :data:`SLACK` on the width and the height."""
    if not text:
        return 0.0, 0.0, 0.0
    w, h, d = text_to_path.get_text_width_height_descent(text, prop, cbook.is_math_text(text))
    up, down = _line(prop)
    return w + SLACK, max(h - d, up) + SLACK / 2, max(d, down) + SLACK / 2


def _size(text: str, prop: FontProperties, rotation: float = 0.0) -> tuple[float, float]:
    """The axis-aligned width and height (points) of a line of ``text`` rotated by
    ``rotation`` degrees."""
    w, up, down = _measure(text, prop)
    a = math.radians(rotation)
    c, s = abs(math.cos(a)), abs(math.sin(a))
    return w * c + (up + down) * s, w * s + (up + down) * c


def text_box(text: Text) -> tuple[float, float]:
    """The axis-aligned width and height (points) of ``text`` as drawn (one line, its rotation
    included); 0 x 0 when it is empty or hidden."""
    if not text.get_text() or not text.get_visible():
        return 0.0, 0.0
    return _size(text.get_text(), text.get_fontproperties(), text.get_rotation())


def _ticks(axis: Axis) -> tuple[list[tuple[float, str]], Any]:
    """The major ticks ``axis`` will draw, as (location, label), and a tick that carries their
    style (size, pad, label font, rotation, alignment, which sides show labels)."""
    if not axis.get_visible():
        return [], None
    locs = list(axis.get_majorticklocs())
    labels = axis.get_major_formatter().format_ticks(locs)
    lo, hi = sorted(axis.get_view_interval())
    tol = 1e-9 * max(abs(hi - lo), 1e-300)
    shown = [(float(x), s) for x, s in zip(locs, labels, strict=True) if lo - tol <= x <= hi + tol]
    return shown, axis.majorTicks[0]


def _fraction(axis: Axis, loc: float) -> float:
    """Where ``loc`` lies along ``axis`` (0 at the axes' left/bottom, 1 at its right/top)."""
    a, b = axis.get_view_interval()
    return 0.5 if b == a else (loc - a) / (b - a)


def _x_extent(ax: Any, width_pt: float) -> Extent:
    """What the x axis draws below (or above) the axes (ticks, their labels, the axis label, the
    offset text), and how far its tick labels overhang the axes' ends, for an axes ``width_pt``
    wide."""
    out = Extent()
    ticks, tick = _ticks(ax.xaxis)
    if tick is None:
        return out
    below = {"bottom": 0.0, "top": 0.0}  # the tick labels' band on each side
    for side, line, label in (
        ("bottom", tick.tick1line, tick.label1),
        ("top", tick.tick2line, tick.label2),
    ):
        if line.get_visible() and ticks:
            below[side] = tick.get_tick_padding()
        if not label.get_visible() or not ticks:
            continue
        depth = 0.0
        for loc, s in ticks:
            w, h = _size(s, label.get_fontproperties(), label.get_rotation())
            depth = max(depth, h)
            x = _fraction(ax.xaxis, loc) * width_pt
            left = {"right": w, "left": 0.0}.get(label.get_horizontalalignment(), w / 2)
            out.left = max(out.left, left - x)
            out.right = max(out.right, w - left - (width_pt - x))
        below[side] = tick.get_tick_padding() + tick.get_pad() + depth
    out.bottom, out.top = below["bottom"], below["top"]
    _, label_h = text_box(ax.xaxis.label)
    if label_h:
        side = ax.xaxis.get_label_position()
        setattr(out, side, below[side] + ax.xaxis.labelpad + label_h)
    offset_text = ax.xaxis.get_major_formatter().get_offset()
    if offset_text:  # right-aligned under the tick labels, beside the axis label
        _, h = _size(offset_text, ax.xaxis.get_offset_text().get_fontproperties())
        out.bottom = max(out.bottom, below["bottom"] + Axis.OFFSETTEXTPAD + h)
    return out


def _y_extent(ax: Any, height_pt: float) -> Extent:
    """What the y axis draws beside the axes (ticks, their labels, the axis label), and how far
    its tick labels overhang the axes' ends, for an axes ``height_pt`` high."""
    out = Extent()
    ticks, tick = _ticks(ax.yaxis)
    if tick is None:
        return out
    for side, line, label in (
        ("left", tick.tick1line, tick.label1),
        ("right", tick.tick2line, tick.label2),
    ):
        if line.get_visible() and ticks:
            setattr(out, side, tick.get_tick_padding())
        if not label.get_visible() or not ticks:
            continue
        width = 0.0
        for loc, s in ticks:  # each label centred on its tick
            w, h = _size(s, label.get_fontproperties(), label.get_rotation())
            width = max(width, w)
            y = _fraction(ax.yaxis, loc) * height_pt
            out.top = max(out.top, h / 2 - (height_pt - y))
            out.bottom = max(out.bottom, h / 2 - y)
        setattr(out, side, tick.get_tick_padding() + tick.get_pad() + width)
    label_w, _ = text_box(ax.yaxis.label)
    if label_w:
        side = ax.yaxis.get_label_position()
        setattr(out, side, getattr(out, side) + ax.yaxis.labelpad + label_w)
    return out


def _top(ax: Any, ytop: float, xtop: float, width_pt: float) -> float:
    """How far above the axes its texts reach: the y tick labels (``ytop``), the x axis's top
    band (``xtop``), the y offset text ("1e6", on the y axis's side, 3 pt above the axes) and
    the title (its baseline ``axes.titlepad`` above all that; above the offset text only when
    the two would overlap, as matplotlib places them)."""
    top = max(ytop, xtop)
    offset_w = offset_top = 0.0
    offset_text = ax.yaxis.get_major_formatter().get_offset()
    if offset_text and ax.yaxis.get_visible():
        offset_w, up, _ = _measure(offset_text, ax.yaxis.get_offset_text().get_fontproperties())
        offset_top = Axis.OFFSETTEXTPAD + up
        top = max(top, offset_top)
    title = ax.title
    if title.get_text() and title.get_visible():
        title_w, up, _ = _measure(title.get_text(), title.get_fontproperties())
        base = xtop
        if offset_w and offset_w > (width_pt - title_w) / 2:  # the title moves above it
            base = max(base, offset_top)
        top = max(top, base + float(matplotlib.rcParams["axes.titlepad"]) + up)
    return top


def extents(fig: Any, width_pt: float, height_pt: float) -> list[Extent]:
    """Each column's extent (its axes and their twins merged) when its axes are ``width_pt``
    wide and ``height_pt`` high."""
    columns: dict[int, Extent] = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        col = spec.colspan.start if spec is not None else 0
        e = _y_extent(ax, height_pt)
        x = _x_extent(ax, width_pt)
        e.top = _top(ax, e.top, x.top, width_pt)
        x.top = 0.0
        e.merge(x)
        columns.setdefault(col, Extent()).merge(e)
    return [columns[c] for c in sorted(columns)]


def _margins(fig: Any) -> list[float]:
    """Left, right, bottom, top and the gap between panels (points) that ``fig``'s texts need
    with its axes where they are now."""
    box = fig.axes[0].get_position()
    W, H = 72.0 * fig.get_size_inches()
    cols = extents(fig, box.width * W, box.height * H)
    return [
        cols[0].left + PAD,
        cols[-1].right + PAD,
        max(c.bottom for c in cols) + PAD,
        max(c.top for c in cols) + PAD,
        max((a.right + b.left + 2 * PAD for a, b in pairwise(cols)), default=0.0),
    ]


def fit(fig: Any) -> None:
    """Set ``fig``'s subplot margins so that every text of its single row of axes lies inside the
    figure, :data:`PAD` from its edge and from the next panel's texts.

    The ticks an axis shows depend on its length (a narrower axis may get more, wider labels),
    so after each adjustment the texts are measured again, and the margins only grow until
    they hold: two rounds as a rule, at most four. A figure too small for its labels keeps
    :data:`MIN_AXES` of plot, its margins shrunk in proportion."""
    if not fig.axes:
        return
    W, H = 72.0 * fig.get_size_inches()
    spec = fig.axes[0].get_subplotspec()
    ncols = spec.get_gridspec().ncols if spec is not None else 1
    least = 72.0 * MIN_AXES
    applied: list[float] | None = None
    for _ in range(4):
        need = _margins(fig)
        if applied is not None and all(n <= a + 0.01 for n, a in zip(need, applied, strict=True)):
            return
        left, right, bottom, top, gap = applied = [
            max(n, a) for n, a in zip(need, applied or need, strict=True)
        ]
        if H - bottom - top < least:
            scale = (H - least) / (bottom + top)
            bottom, top = bottom * scale, top * scale
        if W - left - right - gap * (ncols - 1) < least * ncols:
            scale = (W - least * ncols) / (left + right + gap * (ncols - 1))
            left, right, gap = left * scale, right * scale, gap * scale
        width = (W - left - right - gap * (ncols - 1)) / ncols
        fig.subplots_adjust(
            left=left / W,
            right=1.0 - right / W,
            bottom=bottom / H,
            top=1.0 - top / H,
            wspace=gap / width if ncols > 1 else None,
        )
