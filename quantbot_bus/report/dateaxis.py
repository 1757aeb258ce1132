"""A date axis whose labels never overlap, at any span from a day to decades.

:func:`date_axis` puts ticks on whole hours, days, Mondays, the first of months or the first of
years: the finest step that puts at most :data:`MAX_TICKS` ticks in the axis's view (more than
50 pt apart on a dashboard chart, where a label is at most ~30 pt wide), so the labels need no
rotation and never touch. They are concise (:class:`DateLabels`): ``14:00`` for hours, ``Mar 4``
for days and weeks, ``Apr`` for months with a January shown as its year (``2026``), ``2026`` for
years; what the labels leave out is written once beside the axis (matplotlib's offset text, where
a numeric axis writes ``1e6``): the year (``2026`` or ``2025–2026``), or for hours the day
(``Mar 4 2026`` or ``Mar 4 – Mar 5 2026``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import matplotlib.dates as mdates
from matplotlib.ticker import Formatter, Locator

#: The most ticks (labels) a date axis shows.
MAX_TICKS = 9


def _steps() -> Iterator[tuple[str, float, Locator]]:
    """The candidate steps, finest first, with the unit their labels name: 1, 2, 3, 6 and 12
    hours, 1 and 2 days, 1 and 2 weeks (Mondays), 1, 2, 3 and 6 months (January always among
    them), then 1, 2, 5, 10, 20, 50, ... years; each with its step in days, about."""
    for hours in (1, 2, 3, 6, 12):
        yield "hour", hours / 24, mdates.HourLocator(byhour=range(0, 24, hours))
    yield "day", 1, mdates.DayLocator(interval=1)
    yield "day", 2, mdates.DayLocator(interval=2)
    yield "day", 7, mdates.WeekdayLocator(byweekday=mdates.MO, interval=1)
    yield "day", 14, mdates.WeekdayLocator(byweekday=mdates.MO, interval=2)
    for months in (1, 2, 3, 6):
        yield "month", 30 * months, mdates.MonthLocator(bymonth=range(1, 13, months))
    years = 1
    while True:
        for mult in (1, 2, 5):
            yield "year", 365 * years * mult, mdates.YearLocator(years * mult)
        years *= 10


def _day_span(days: list[dt.date]) -> str:
    """``Mar 4 2026``, or ``Mar 4 – Mar 5 2026`` for days from first to last ("" for none)."""
    if not days:
        return ""
    first, last = days[0], days[-1]
    text = f"{first:%b} {first.day}" + (f" – {last:%b} {last.day}" if last != first else "")
    return f"{text} {last.year}"


class DateLabels(Formatter):
    """Tick labels of one ``unit`` (``day``, ``month``, ``year``) and, as the offset text, the
    year(s) of the ticks when no label shows one."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.offset = ""

    def _label(self, when: dt.datetime) -> str:
        if self.unit == "hour":
            return f"{when:%H:%M}"
        if self.unit == "year" or (self.unit == "month" and when.month == 1):
            return str(when.year)
        return f"{when:%b}" if self.unit == "month" else f"{when:%b} {when.day}"

    def __call__(self, x: float, pos: int | None = None) -> str:
        return self._label(mdates.num2date(x))

    def format_ticks(self, values: Any) -> list[str]:
        dates = [mdates.num2date(v) for v in values]
        if self.unit == "hour":
            self.offset = _day_span(sorted({d.date() for d in dates}))
            return [self._label(d) for d in dates]
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
    left, right = ax.get_xlim()
    lo, hi = mdates.num2date(left), mdates.num2date(right)
    unit, locator = next(
        (unit, loc)
        for unit, days, loc in _steps()
        # steps far too fine are passed over uncounted (matplotlib warns past 1,000 ticks)
        if abs(right - left) / days <= 2 * MAX_TICKS and len(loc.tick_values(lo, hi)) <= MAX_TICKS
    )
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(DateLabels(unit))
