"""The analysis notebook (examples/analysis.md) as a plain script: prints every table of it.

Usage: python examples/analysis.py [--exports-dir DIR] [--out DIR] [--section N ...]

The SQL lives in one place, the ```sql blocks of analysis.md beside this file: each block is one
statement whose first line is a ``-- title`` comment, under a ``## N. Section`` heading. This
script runs them in order on one read-only connection to ``<exports-dir>/bus.duckdb`` (the
publication: views over one immutable generation, so it never blocks the daemon) and prints each
result. The export section's ``COPY ... TO 'file'`` statements write their files under ``--out``.
Needs only duckdb and the standard library. Exit status: 0, or 1 if any query failed (each
failure is named on stderr), 2 for bad arguments or a missing publication.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

NOTEBOOK = Path(__file__).with_name("analysis.md")
SECTION_RE = re.compile(r"^## (\d+)\. (.+?)\s*$")
COPY_TARGET_RE = re.compile(r"(\)\s*TO\s+)'([^']+)'", re.IGNORECASE)
MAX_ROWS = 40
MAX_WIDTH = 160


@dataclass(frozen=True)
class Query:
    """One ```sql block of the notebook: its section number and title, its own title, its SQL."""

    section: int
    section_title: str
    title: str
    sql: str

    @property
    def is_export(self) -> bool:
        return self.sql.lstrip().upper().startswith("COPY")


def parse_notebook(text: str) -> list[Query]:
    """The ```sql blocks of ``text`` in order. A block outside a numbered section, or whose first
    line is not a ``-- title`` comment, is an error (ValueError naming its line)."""
    queries: list[Query] = []
    section: tuple[int, str] | None = None
    block: list[str] | None = None
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if block is not None:
            if line.strip() == "```":
                queries.append(_query(section, block, start))
                block = None
            else:
                block.append(line)
        elif line.strip() == "```sql":
            block, start = [], number
        elif m := SECTION_RE.match(line):
            section = (int(m.group(1)), m.group(2))
        elif line.startswith("## "):
            section = None
    if block is not None:
        raise ValueError(f"analysis.md line {start}: ```sql block is never closed")
    return queries


def _query(section: tuple[int, str] | None, lines: list[str], start: int) -> Query:
    if section is None:
        raise ValueError(f"analysis.md line {start}: ```sql block outside a '## N. ' section")
    if not lines or not lines[0].startswith("-- "):
        raise ValueError(f"analysis.md line {start}: a ```sql block starts with '-- <title>'")
    sql = "\n".join(lines[1:]).strip().rstrip(";").strip()
    return Query(section[0], section[1], lines[0][3:].strip(), sql)


def load_queries(path: Path = NOTEBOOK) -> list[Query]:
    return parse_notebook(path.read_text(encoding="utf-8"))


def export_targets(sql: str) -> list[str]:
    """The file names a ``COPY (...) TO 'file'`` statement writes."""
    return [m.group(2) for m in COPY_TARGET_RE.finditer(sql)]


def with_out_dir(sql: str, out: Path) -> str:
    """``sql`` with each relative ``COPY ... TO 'file'`` target moved under ``out``."""

    def move(m: re.Match[str]) -> str:
        target = Path(m.group(2))
        path = target if target.is_absolute() else out / target
        return m.group(1) + "'" + str(path).replace("'", "''") + "'"

    return COPY_TARGET_RE.sub(move, sql)


def _print_rows(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description or ()]
    rows = cur.fetchmany(MAX_ROWS + 1)
    if not rows:
        print("(no rows)")
        return
    shown = [[_cell(v) for v in row] for row in rows[:MAX_ROWS]]
    widths = [max([len(n)] + [len(r[i]) for r in shown]) for i, n in enumerate(names)]
    widths = [min(w, 48) for w in widths]
    print(" | ".join(n.ljust(w)[:w] for n, w in zip(names, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in shown:
        print(" | ".join(c.ljust(w)[:w] for c, w in zip(r, widths, strict=True)))
    if len(rows) > MAX_ROWS:
        print(f"... (first {MAX_ROWS} rows)")


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def run(
    con: duckdb.DuckDBPyConnection, queries: Iterable[Query], out: Path
) -> list[tuple[Query, str]]:
    """Print each query's table (exports: write the files under ``out``); returns the failures."""
    failures: list[tuple[Query, str]] = []
    section = None
    for q in queries:
        if q.section != section:
            section = q.section
            print(f"\n## {q.section}. {q.section_title}\n")
        print(f"-- {q.title}")
        try:
            if q.is_export:
                out.mkdir(parents=True, exist_ok=True)
                [(rows,)] = con.execute(with_out_dir(q.sql, out)).fetchall()
                for name in export_targets(q.sql):
                    print(f"wrote {out / name} ({rows} rows)")
            else:
                _print_rows(con, q.sql)
        except duckdb.Error as exc:
            failures.append((q, str(exc)))
            print(f"ERROR: {exc}")
        print()
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exports-dir", type=Path, default=Path("exports"), help="default ./exports"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("analysis-export"),
        help="where the export section writes its files (default ./analysis-export)",
    )
    parser.add_argument(
        "--section", type=int, action="append", help="only this section (repeatable)"
    )
    args = parser.parse_args(argv)
    db = args.exports_dir / "bus.duckdb"
    if not db.is_file():
        print(f"error: {db} does not exist (run the daemon or quantbot-bus sync)", file=sys.stderr)
        return 2
    queries = [q for q in load_queries() if not args.section or q.section in args.section]
    con = duckdb.connect(str(db), read_only=True)
    try:
        failures = run(con, queries, args.out.resolve())
    finally:
        con.close()
    for q, error in failures:
        print(f"error: section {q.section}, {q.title!r}: {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
