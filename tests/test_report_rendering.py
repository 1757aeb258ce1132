"""The dashboard's charts as they are seen: the date labels of "runs over time" never overlap
(whatever the span: a day to years), checked on the SVG the page embeds, every text measured with
the font's metrics and compared as the rotated box it is drawn in; and the small "regression
checks by verdict" chart is drawn at its own size and aspect by the system chromium, not blown up
to the page's width."""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import CHROMIUM, chromium
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path

from quantbot_bus.report import charts, page, sections, tearsheet
from quantbot_bus.report.data import ReportData, Tearsheet

Point = tuple[float, float]

TEXT = re.compile(r"<text ([^>]*)>([^<]*)</text>")
ATTR = re.compile(r'([\w-]+)="([^"]*)"')
TRANSFORM = re.compile(r"(translate|rotate|scale)\(([^)]*)\)")
#: A date tick label, concise ("Jan 5", "Apr", "2026", "14:00") or ISO ("2026-01-05").
DATE_LABEL = re.compile(r"^(?:[A-Z][a-z]{2}(?: \d{1,2})?|\d{4}(?:-\d{2}-\d{2})?|\d{2}:\d{2})$")
ANCHOR = {"start": 0.0, "middle": 0.5, "end": 1.0}


def transform(spec: str) -> np.ndarray:
    """The 3 x 3 matrix of an SVG ``transform`` attribute (``translate``, ``rotate`` with or
    without a centre, ``scale``; the list applied right to left, as SVG does)."""
    out = np.eye(3)
    for op, raw in TRANSFORM.findall(spec):
        args = [float(v) for v in raw.replace(",", " ").split()]
        if op == "translate":
            step = np.array([[1, 0, args[0]], [0, 1, args[1] if len(args) > 1 else 0], [0, 0, 1]])
        elif op == "scale":
            sy = args[1] if len(args) > 1 else args[0]
            step = np.diag([args[0], sy, 1.0])
        else:
            a = math.radians(args[0])
            c, s = math.cos(a), math.sin(a)
            step = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
            if len(args) == 3:  # rotate(a cx cy): about (cx, cy)
                cx, cy = args[1], args[2]
                step = (
                    transform(f"translate({cx} {cy})") @ step @ transform(f"translate({-cx} {-cy})")
                )
        out = out @ step
    return out


def text_boxes(svg: str) -> list[tuple[str, list[Point]]]:
    """Every ``<text>`` of ``svg`` with the four corners (SVG user units, y down) of the box it
    is drawn in, as matplotlib sizes a line of text: its advance width, and at least the height
    and depth of "lp" above and below the baseline (DejaVu Sans at its ``font-size``, measured
    with FreeType as the browser and matplotlib measure it); placed by its ``text-anchor`` on its
    baseline at (x, y), moved by its ``transform``."""
    out = []
    for attrs_text, raw in TEXT.findall(svg):
        attrs = dict(ATTR.findall(attrs_text))
        style = dict(
            (k.strip(), v.strip()) for k, v in (p.split(":", 1) for p in attrs["style"].split(";"))
        )
        size = float(style["font-size"].removesuffix("px"))
        text = html.unescape(raw)
        prop = FontProperties(family="DejaVu Sans", size=size)
        w, h, d = text_to_path.get_text_width_height_descent(text, prop, False)
        _, lp_h, lp_d = text_to_path.get_text_width_height_descent("lp", prop, False)
        up, down = max(h - d, lp_h - lp_d), max(d, lp_d)
        x, y = float(attrs.get("x", 0.0)), float(attrs.get("y", 0.0))
        left = x - ANCHOR[style.get("text-anchor", "start")] * w
        corners = [(left, y - up), (left + w, y - up), (left + w, y + down), (left, y + down)]
        m = transform(attrs.get("transform", ""))
        box = [tuple((m @ np.array([px, py, 1.0]))[:2].tolist()) for px, py in corners]
        out.append((text, box))
    return out


def overlap(a: list[Point], b: list[Point], tol: float = 0.05) -> bool:
    """Whether two convex boxes overlap by more than ``tol`` (separating axes: apart along any
    edge's normal means apart)."""
    for poly in (a, b):
        for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True):
            nx, ny = y1 - y0, x0 - x1
            norm = math.hypot(nx, ny)
            pa = [(px * nx + py * ny) / norm for px, py in a]
            pb = [(px * nx + py * ny) / norm for px, py in b]
            if min(max(pa), max(pb)) - max(min(pa), min(pb)) <= tol:
                return False
    return True


def per_day(start: dt.date, span: int, every: int = 1) -> list[dict[str, Any]]:
    """Runs of three types on every ``every``-th day of ``span`` days from ``start`` (few runs a
    day: the cumulative count stays below 1,000, so no y label looks like a year)."""
    return [
        {"day": start + dt.timedelta(days=i), "run_type": t, "runs": 1 + (i + k) % 2}
        for i in range(0, span, every)
        for k, t in enumerate(("backtest", "optimize", "path-only"))
    ]


SPANS = {
    "1-day": per_day(dt.date(2026, 3, 4), 1),
    "7-days": per_day(dt.date(2026, 3, 4), 7),
    "30-days": per_day(dt.date(2026, 3, 4), 30),
    "30-days-with-gaps": per_day(dt.date(2026, 3, 4), 30, every=4),
    "90-days": per_day(dt.date(2026, 3, 4), 90),
    "90-days-over-new-year": per_day(dt.date(2025, 11, 15), 90),
    "2-years": per_day(dt.date(2024, 5, 20), 730, every=7),
}


@pytest.mark.parametrize("rows", list(SPANS.values()), ids=list(SPANS))
def test_runs_over_time_labels_never_overlap(rows: list[dict[str, Any]]) -> None:
    boxes = text_boxes(charts.runs_over_time(rows))
    dates = [t for t, _ in boxes if DATE_LABEL.match(t)]
    span = (rows[-1]["day"] - rows[0]["day"]).days + 1
    assert 1 <= len(dates) <= 10, dates
    if span > 1:
        assert len(dates) >= 2, dates
    clashes = [(s, t) for (s, a), (t, b) in combinations(boxes, 2) if overlap(a, b)]
    assert clashes == [], clashes
    if span < 7:  # runs per day on a week of days (a new bus), never on hours
        assert not [t for t in dates if ":" in t], dates
        assert f"{rows[-1]['day']:%b} {rows[-1]['day'].day}" in dates, dates


#: A run's calls over a few hours, ten days, three years (entry times in ms since the epoch).
TEARSHEET_SPANS = {
    "6-hours": 6 * 3_600_000,
    "10-days": 10 * 86_400_000,
    "3-years": 1096 * 86_400_000,
}


@pytest.mark.parametrize("span_ms", list(TEARSHEET_SPANS.values()), ids=list(TEARSHEET_SPANS))
def test_tearsheet_date_labels_are_level_and_never_overlap(span_ms: int) -> None:
    rng = np.random.default_rng(span_ms % 1000)
    ts = 1_767_225_600_000 + np.sort(rng.integers(0, span_ms, 400))  # from 2026-01-01
    view = tearsheet.build(Tearsheet("run", None, ts, rng.normal(20, 900, 400)))
    for name in ("equity", "underwater", "rolling-sharpe"):
        boxes = text_boxes(view.charts[name])
        dates = [(t, box) for t, box in boxes if DATE_LABEL.match(t)]
        assert 2 <= len(dates) <= 10, (name, dates)
        tilted = [t for t, box in dates if abs(box[0][1] - box[1][1]) > 0.01]
        assert tilted == [], (name, tilted)  # level: the top edge is horizontal
        clashes = [(s, t) for (s, a), (t, b) in combinations(boxes, 2) if overlap(a, b)]
        assert clashes == [], (name, clashes)
    if span_ms < 86_400_000:  # the hours' day is written once beside the axis
        assert ">Jan 1 2026</text>" in view.charts["equity"]


def test_the_overlap_check_sees_rotated_and_level_boxes() -> None:
    """The check itself: two labels side by side apart, then closer than their width; two
    rotated labels whose axis-aligned boxes overlap but whose text does not, then ones that
    do."""
    style = "font-size: 8px; font-family: 'DejaVu Sans', sans-serif; text-anchor: middle"

    def two(dx: float, rotation: float = 0.0) -> bool:
        texts = "".join(
            f'<text style="{style}" x="{x}" y="50" transform="rotate({rotation} {x} 50)">'
            "2026-01-05</text>"
            for x in (100.0, 100.0 + dx)
        )
        [(_, a), (_, b)] = text_boxes(texts)
        return overlap(a, b)

    assert not two(48.0) and two(44.0)  # the label is ~46.5 units wide
    # ~7.7 units high: apart once dx * sin 60° is more, though their upright boxes overlap
    assert not two(10.0, -60.0) and two(8.0, -60.0)


# ------------------------------------------------------------------------- a real browser

#: Added to the page under test only (the dashboard has no script): the rendered size of each
#: verdicts chart and the width of the figure that holds it, in CSS px.
MEASURE = (
    "<script>document.body.dataset.rects = Array.from("
    "document.querySelectorAll('figure[data-chart=\"verdicts\"]'), f => {"
    "const r = f.querySelector('svg').getBoundingClientRect();"
    "return [r.width, r.height, f.getBoundingClientRect().width].join(); }).join(' ');"
    "</script>"
)
#: A column narrower than the chart, where it must shrink.
NARROW = 300


def rendered(tmp: Path, page_html: str) -> list[tuple[float, float, float]]:
    """Each verdicts chart's width and height and its figure's width (CSS px), as chromium lays
    ``page_html`` out in a window 1400 px wide."""
    path = tmp / "page.html"
    path.write_text(page_html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = chromium(tmp, "--window-size=1400,900", "--dump-dom", path.as_uri()).stdout
    m = re.search(r'data-rects="([^"]*)"', dom)
    assert m, dom[-2000:]
    return [
        (float(w), float(h), float(box))
        for w, h, box in (rect.split(",") for rect in m.group(1).split())
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install -y chromium")
def test_verdicts_chart_keeps_its_own_size_and_aspect_in_chromium(tmp_path: Path) -> None:
    """On the page (its own CSS) the chart is drawn at the size matplotlib drew it, not stretched
    to the section's ~1,100 px; in a column narrower than that (a phone) it shrinks, keeping its
    aspect."""
    verdicts = [("no change", 11), ("insufficient data", 6), ("regression", 1)]
    data = ReportData(
        published=True, regressions=[], verdicts=[{"verdict": v, "n": n} for v, n in verdicts]
    )
    doc = page.render([sections.regressions(data)], subtitle="verdicts")
    fig = re.search(r'<figure data-chart="verdicts">(<svg[^>]*>).*?</figure>', doc, re.S)
    assert fig, "no verdicts chart"
    _, _, vb_w, vb_h = (float(v) for v in dict(ATTR.findall(fig.group(1)))["viewBox"].split())
    natural = vb_w * 4 / 3  # matplotlib's viewBox is the figure in pt; CSS px are 96 an inch
    narrow = f'<div style="width:{NARROW}px">{fig.group(0)}</div></main>'
    wide_rect, narrow_rect = rendered(tmp_path, doc.replace("</main>", narrow))
    w, h, box = wide_rect
    assert box > 2 * natural  # the section is far wider than the chart
    assert w == pytest.approx(natural, abs=1.0), (w, h, box, natural)
    assert w / h == pytest.approx(vb_w / vb_h, rel=0.01), (w, h)
    w, h, box = narrow_rect
    assert box == NARROW and w == pytest.approx(NARROW, abs=1.0), (w, h, box)
    assert w / h == pytest.approx(vb_w / vb_h, rel=0.01), (w, h)
