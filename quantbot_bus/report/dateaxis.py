"""A date axis whose labels never overlap, at any span from a day to decades.

:func:`date_axis` puts ticks on whole days, Mondays, the first of months or the first of years:
the finest step that puts at most :data:`MAX_TICKS` ticks in the axis's view (more than 50 pt
apart on a dashboard chart, where a label is at most ~30 pt wide), so the labels need no rotation
and never touch. They are concise (:class:`DateLabels`): ``Mar 4`` for days and weeks, ``Apr``
for months with a January shown as its year (``2026``), ``2026`` for years; when the labels do not
show the year, it is written once beside the axis (matplotlib's offset text, where a numeric axis
writes ``1e6``: ``2026`` or ``2025–2026``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import matplotlib.dates as mdates
from matplotlib.ticker import Formatter, Locator

#: The most ticks (labels) a date axis shows.
MAX_TICKS = 9


def _steps() -> Iterator[tuple[str, Locator]]:
    """The candidate steps, finest first, with the unit their labels name: 1 and 2 days, 1 and 2
    weeks (Mondays), 1, 2, 3 and 6 months (January always among them), then 1, 2, 5, 10, 20,
    50, ... years."""
    yield "day", mdates.DayLocator(interval=1)
    yield "day", mdates.DayLocator(interval=2)
    yield "day", mdates.WeekdayLocator(byweekday=mdates.MO, interval=1)
    yield "day", mdates.WeekdayLocator(byweekday=mdates.MO, interval=2)
    for months in (1, 2, 3, 6):
        yield "month", mdates.MonthLocator(bymonth=range(1, 13, months))
    years = 1
    while True:
        for mult in (1, 2, 5):
            yield "year", mdates.YearLocator(years * mult)
        years *= 10


class DateLabels(Formatter):
    """Tick labels of one ``unit`` (``day``, ``month``, ``year``) and, as the offset text, the
    year(s) of the ticks when no label shows one."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.offset = ""

    def _label(self, when: dt.datetime) -> str:
        if self.unit == "year" or (self.unit == "month" and when.month == 1):
            return str(when.year)
        return f"{when:%b}" if self.unit == "month" else f"{when:%b} {when.day}"

    def __call__(self, x: float, pos: int | None = None) -> str:
        return self._label(mdates.num2date(x))

    def format_ticks(self, values: Any) -> list[str]:
        dates = [mdates.num2date(v) for v in values]
        years = sorted({d.year for d in dates})
        shown = self.unit == "year" or any(d.month == 1 for d in dates if self.unit == "month")
        if shown or not years:
            self.offset = ""
        else:
            self.offset = str(years[0]) if len(years) == 1 else f"{years[0]}–{years[-1]}"
        return [self._label(d) for d in dates]

    def get_offset(self) -> str:
        return self.offset


def date_axis(ax: Any) -> None:
    """Ticks and labels on ``ax``'s x axis (dates, in matplotlib's day numbers) for its current
    view: call it when everything is drawn (the view is final)."""
    lo, hi = mdates.num2date(ax.get_xlim())
    unit, locator = next(
        (unit, loc) for unit, loc in _steps() if len(loc.tick_values(lo, hi)) <= MAX_TICKS
    )
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(DateLabels(unit))
