"""Paths as catalog text: names that are not UTF-8.

Paths are stored as UTF-8 text. A name that is not UTF-8 reaches Python with surrogate escapes
(``'\\udcff'`` for the byte 0xff), which DuckDB cannot store; such a byte is stored as the text
``\\xff`` instead (:func:`db_text`) and mapped back when read (:func:`fs_text`), so the row
still matches the directory on disk and such a directory is rejected like any other instead of
failing the whole batch. (A UTF-8 name that literally contains ``\\x8`` .. ``\\xff`` text would
be mapped too: accepted.)
"""

from __future__ import annotations

import os
import re

_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def db_text(value: str) -> str:
    """A path (or any str from the filesystem) as storable UTF-8 text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(value).decode("utf-8", "backslashreplace")
    return value


def fs_text(value: str) -> str:
    """The inverse of :func:`db_text` for text read back from the catalog."""
    if "\\x" not in value:
        return value
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), value)
