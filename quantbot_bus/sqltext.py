"""SQL text the bus builds itself: quoted identifiers and string literals.

Values are bound as parameters wherever DuckDB allows. Where it does not (CREATE VIEW, COPY,
ATTACH, an inlined ``IN`` list that lets DuckDB use an index), the text is the bus's own: a path
it built or a name it validated, quoted here.
"""

from __future__ import annotations


def q(identifier: str) -> str:
    """A quoted SQL identifier (``"name"``, inner quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def lit(text: str) -> str:
    """A SQL string literal (``'text'``, inner quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"
