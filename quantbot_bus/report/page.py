"""The dashboard's HTML: the page skeleton (style, in-page nav, sections) and the small builders
every section uses (escaped text, formatted numbers, tables, figures, empty states).

Everything that comes from the catalog or a state file goes through :func:`esc` (or a formatter
that returns only digits), so a run id, a caller name or a rejection reason is always text, never
markup. The page is one self-contained file: inline CSS and inline SVG, no script, no URL.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Formatter = Callable[[Any], str]

CSS = """
:root { --fg:#1d2330; --muted:#5d6675; --line:#d9dde3; --bg:#f6f7f9; --card:#fff;
        --good:#00785a; --bad:#b3470b; --accent:#0060a0; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding:14px 24px; background:#1d2330; color:#fff; }
header h1 { margin:0; font-size:20px; } header p { margin:2px 0 0; color:#c9ced6; font-size:12px; }
nav { position:sticky; top:0; z-index:1; background:var(--card); border-bottom:1px solid var(--line);
      padding:6px 24px; display:flex; flex-wrap:wrap; gap:4px 16px; }
nav a { color:var(--accent); text-decoration:none; font-size:13px; }
main { max-width:1180px; margin:0 auto; padding:8px 24px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:6px;
          padding:12px 18px 16px; margin:16px 0; }
h2 { font-size:17px; margin:4px 0 10px; } h3 { font-size:14px; margin:14px 0 6px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin:6px 0 10px; }
.card { border:1px solid var(--line); border-radius:5px; padding:6px 12px; min-width:120px; }
.card b { display:block; font-size:18px; } .card small { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; font-size:12.5px; margin:6px 0; width:100%; }
th, td { border-bottom:1px solid var(--line); padding:3px 8px; text-align:left;
         vertical-align:top; }
th { background:var(--bg); font-weight:600; } td.num, th.num { text-align:right;
     font-variant-numeric:tabular-nums; white-space:nowrap; }
td.wrap { word-break:break-word; max-width:520px; }
.scroll { max-height:420px; overflow:auto; }
figure { margin:8px 0; } figcaption { color:var(--muted); font-size:12px; }
svg.plot { max-width:100%; height:auto; display:block; }
.row { display:flex; flex-wrap:wrap; gap:12px; } .row figure { flex:1 1 340px; }
.empty { color:var(--muted); font-style:italic; }
.note { color:var(--muted); font-size:12px; }
.good { color:var(--good); } .bad { color:var(--bad); }
code { font-size:12px; background:var(--bg); padding:0 3px; border-radius:3px; }
"""


def esc(value: Any) -> str:
    """Any value as HTML text: escaped, ``—`` for None."""
    if value is None:
        return "—"
    return html.escape(str(value), quote=True)


def fmt_int(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def fmt_num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{float(value):,.{digits}f}"


def fmt_bps(value: Any) -> str:
    return fmt_num(value, 0)


def fmt_pct(value: Any) -> str:
    """A share (0..1) as a percentage."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{100.0 * float(value):.1f}%"


def fmt_bytes(value: Any) -> str:
    if value is None:
        return "—"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"  # not reached


def fmt_ts(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC), escaped."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return esc(value.isoformat(sep=" ", timespec="seconds"))
    return esc(value)


def fmt_text(value: Any) -> str:
    return esc(value)


def fmt_bool(value: Any) -> str:
    return "—" if value is None else ("yes" if value else "no")


@dataclass(frozen=True)
class Col:
    """A table column: the row key, its header and how its values are shown."""

    key: str
    label: str
    fmt: Formatter = fmt_text
    numeric: bool = False
    wrap: bool = False


def table(
    cols: Sequence[Col], rows: Sequence[dict[str, Any]], *, name: str, scroll: bool = False
) -> str:
    """An HTML table of ``rows`` (``data-table`` = ``name``); every cell escaped by its
    column's formatter."""
    head = "".join(
        f'<th class="num">{esc(c.label)}</th>' if c.numeric else f"<th>{esc(c.label)}</th>"
        for c in cols
    )
    body = []
    for row in rows:
        cells = []
        for c in cols:
            cls = "num" if c.numeric else ("wrap" if c.wrap else "")
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{c.fmt(row.get(c.key))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    out = (
        f'<table data-table="{esc(name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    return f'<div class="scroll">{out}</div>' if scroll else out


def cards(items: Sequence[tuple[str, str]]) -> str:
    """Headline numbers: (already formatted value, label) pairs."""
    inner = "".join(
        f'<div class="card"><b>{value}</b><small>{esc(label)}</small></div>'
        for value, label in items
    )
    return f'<div class="cards">{inner}</div>'


def chart(svg: str, name: str, caption: str) -> str:
    """A chart (an inline SVG from :mod:`quantbot_bus.report.svg`) with its caption."""
    return f'<figure data-chart="{esc(name)}">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def empty(text: str) -> str:
    """What a section shows when it has nothing to plot."""
    return f'<p class="empty">{esc(text)}</p>'


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor, title and body (HTML)."""

    id: str
    title: str
    body: str


def render(sections: Sequence[Section], *, subtitle: str) -> str:
    """The whole page: header, the in-page nav, the sections."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    main = "".join(
        f'<section id="{esc(s.id)}" data-section="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>'
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>quantbot-bus report</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>quantbot-bus report</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{main}</main></body></html>\n"
    )
