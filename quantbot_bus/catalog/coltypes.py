"""Column types of artifact tables: their DuckDB names and the safe widening between them.

A column type is the Arrow type string the catalog records for each artifact
(``catalog.artifacts_f.arrow_schema``: ``int32``, ``double``, ``string``,
``timestamp[us]``...). :func:`widen` says what two runs' types of one column become in a table
that holds both — the widest of the two when one safely holds the other, ``None`` when they
conflict:

- integers widen to the smallest integer holding both (``int32`` + ``int64`` → ``int64``,
  ``uint32`` + ``int8`` → ``int64``), and to ``double`` past 64 bits;
- floating point widens to the wider float; an integer or decimal with a float, or two
  different decimals, widen to ``double`` (the top of the numeric chain: int → bigint → double);
- ``string`` / ``large_string`` / ``string_view`` are one type, as are ``binary`` /
  ``large_binary``; timestamps widen to the finer unit, those with a time zone only with the
  same zone; a dictionary-encoded column (a pandas category) is its values' type;
- ``null`` (a column with no value in a run) fits any type;
- anything else must be equal: a string where others have numbers, a date where others have
  timestamps, a list where others have scalars is a conflict.

:func:`duck_type` is the DuckDB name of a type (what ``exports.<table>`` shows, and the CAST
target when a run's rows are widened); :func:`parse_schema` reads the catalog's JSON.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

_INTS = {f"{p}int{w}": (p == "", w) for p in ("", "u") for w in (8, 16, 32, 64)}
_INT_DUCK = {
    (True, 8): "TINYINT",
    (True, 16): "SMALLINT",
    (True, 32): "INTEGER",
    (True, 64): "BIGINT",
    (False, 8): "UTINYINT",
    (False, 16): "USMALLINT",
    (False, 32): "UINTEGER",
    (False, 64): "UBIGINT",
}
_FLOATS = {"halffloat": 16, "float": 32, "double": 64}
_STRINGS = ("string", "large_string", "string_view", "utf8", "large_utf8")
_BINARIES = ("binary", "large_binary", "binary_view")
_TS_UNITS = ("s", "ms", "us", "ns")
_DECIMAL = re.compile(r"^decimal(?:32|64|128|256)\((\d+), ?(\d+)\)$")
_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)\]$")
_TIMESTAMP_TZ = re.compile(r"^timestamp\[(s|ms|us|ns), tz=([^\]]+)\]$")
_DICTIONARY = re.compile(r"^dictionary<values=(.+), indices=\w+(?:, ordered=\d)?>$")
_PLAIN_DUCK = {
    "null": "NULL",
    "bool": "BOOLEAN",
    "halffloat": "FLOAT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "date32[day]": "DATE",
    "date64[ms]": "DATE",
    "time32[s]": "TIME",
    "time32[ms]": "TIME",
    "time64[us]": "TIME",
    "time64[ns]": "TIME",
}


def normal(t: str) -> str:
    """Arrow type ``t`` as its values read: a dictionary-encoded column (a pandas category,
    ``dictionary<values=string, indices=int32, ordered=0>``) is its values' type, as DuckDB
    reads it."""
    m = _DICTIONARY.match(t)
    return normal(m.group(1)) if m else t


def _kind(t: str) -> str:
    """The widening family of Arrow type ``t``."""
    if t in _INTS:
        return "int"
    if t in _FLOATS:
        return "float"
    if _DECIMAL.match(t):
        return "decimal"
    if t in _STRINGS:
        return "string"
    if t in _BINARIES:
        return "binary"
    if _TIMESTAMP.match(t):
        return "timestamp"
    tz = _TIMESTAMP_TZ.match(t)
    if tz:
        return f"timestamp, tz={tz.group(2)}"  # one family per time zone
    return t  # its own family: equal or conflicting


def widen(a: str, b: str) -> str | None:
    """The type a column of types ``a`` and ``b`` (Arrow strings) has in one table: the wider
    of the two, or a type holding both; ``None`` when they conflict."""
    if a == b:
        return a
    if a == "null":
        return b
    if b == "null":
        return a
    ka, kb = _kind(a), _kind(b)
    numeric = ("int", "float", "decimal")
    if ka in numeric and kb in numeric:
        if ka == kb == "int":
            return _widen_ints(a, b)
        if ka == kb == "float":
            return a if _FLOATS[a] >= _FLOATS[b] else b
        return "double"
    if ka == kb == "string":
        return "string"
    if ka == kb == "binary":
        return "binary"
    if ka == kb and ka.startswith("timestamp"):
        ua = _TIMESTAMP.match(a) or _TIMESTAMP_TZ.match(a)
        ub = _TIMESTAMP.match(b) or _TIMESTAMP_TZ.match(b)
        assert ua is not None and ub is not None
        unit = max(ua.group(1), ub.group(1), key=_TS_UNITS.index)
        return f"timestamp[{unit}]" if ka == "timestamp" else f"timestamp[{unit}{ka[9:]}]"
    return None


def _widen_ints(a: str, b: str) -> str:
    (sa, wa), (sb, wb) = _INTS[a], _INTS[b]
    if sa == sb:
        return a if wa >= wb else b
    signed, unsigned = (wa, wb) if sa else (wb, wa)
    width = max(signed, 2 * unsigned)  # a signed type holding the unsigned one
    return f"int{width}" if width <= 64 else "double"


def is_wider(wide: str, narrow: str) -> bool:
    """Whether ``wide`` holds every value of ``narrow`` (and differs from it)."""
    return wide != narrow and widen(wide, narrow) == wide


@lru_cache(maxsize=1024)
def duck_type(t: str) -> str:
    """The DuckDB type of Arrow type ``t`` as DuckDB reads it from Parquet (the Arrow string
    itself for a type not listed here: nested and rarer types)."""
    if t in _INTS:
        return _INT_DUCK[_INTS[t]]
    if t in _PLAIN_DUCK:
        return _PLAIN_DUCK[t]
    if t in _STRINGS:
        return "VARCHAR"
    if t in _BINARIES or t.startswith("fixed_size_binary"):
        return "BLOB"
    m = _DECIMAL.match(t)
    if m:
        return f"DECIMAL({m.group(1)},{m.group(2)})"
    m = _TIMESTAMP.match(t)
    if m:
        return "TIMESTAMP_NS" if m.group(1) == "ns" else "TIMESTAMP"
    if t.startswith("timestamp["):
        return "TIMESTAMP WITH TIME ZONE"
    return t


def castable(t: str) -> bool:
    """Whether rows may be CAST to ``t`` in SQL (a type :func:`duck_type` names)."""
    kind = _kind(t)
    return (
        kind in ("int", "float", "decimal", "string", "binary")
        or kind.startswith("timestamp")
        or (t in _PLAIN_DUCK and t != "null")
    )


@lru_cache(maxsize=4096)
def parse_schema(text: str | None) -> tuple[tuple[str, str], ...]:
    """The ``(column, Arrow type)`` pairs of an ``arrow_schema`` JSON text (empty when it is
    missing or not a list of ``{"name", "type"}`` objects)."""
    if not text:
        return ()
    try:
        fields = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(fields, list):
        return ()
    return tuple(
        (str(f["name"]), normal(str(f["type"])))
        for f in fields
        if isinstance(f, dict) and "name" in f and "type" in f
    )
