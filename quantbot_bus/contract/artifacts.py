"""The declared artifacts: each listed file checked by stat first (exists, a regular file inside
the root, not shorter than declared), then read: Parquet magic bytes and footer (never the data
pages), row count, Arrow schema and sha256."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..ignore import IGNORED_SUFFIXES, is_within
from .files import _kind, _NotRegular, _open_regular
from .model import METADATA_NAME, ArtifactInfo, Incomplete, Invalid
from .reasons import _show, _show_path, _Stop

#: Hashes are computed streamed, in chunks of this size.
HASH_CHUNK = 1024 * 1024
#: A Parquet file up to this size that is hashed anyway is read in one piece (hash + footer).
WHOLE_READ_MAX = 4 * 1024 * 1024

_PAR1 = b"PAR1"


@dataclass
class _Declared:
    index: int
    name: str
    file: str
    rows: int | None
    bytes: int | None
    sha256: str | None

    @property
    def label(self) -> str:
        return f"artifact {self.name!r} (file {_show(self.file)})"


def _check_file_string(decl: _Declared) -> None:
    f = decl.file
    bad: str | None = None
    if "\x00" in f:
        bad = "contains a NUL character"
    elif "\\" in f:
        bad = "contains a backslash; use forward slashes"
    elif f.startswith("/"):
        bad = "is an absolute path; give the path relative to the run directory"
    else:
        parts = f.split("/")
        if ".." in parts:
            bad = "contains '..'; files must stay inside the run directory"
        elif any(p == "" or p == "." for p in parts):
            bad = "has an empty or '.' component; write a plain relative path like 'trades.parquet'"
        elif any(p.startswith(".") for p in parts):
            bad = "names a hidden file or directory (starting with '.'), which is never read"
        elif any(p.endswith(IGNORED_SUFFIXES) for p in parts):
            bad = "ends in .tmp/.partial, which marks unfinished files that are never read"
        elif parts[-1] == METADATA_NAME and len(parts) == 1:
            bad = "is metadata.json itself"
    if bad:
        raise _Stop(Invalid(f"metadata.json: {decl.label}: the file path {bad}"))


@dataclass
class _Located:
    decl: _Declared
    lexical: str  # absolute path inside the run dir (what the catalog records)
    target: str  # resolved real path (inside the artifacts root)
    size: int


def _locate(decl: _Declared, run_abs: str, run_real: str, root_real: str) -> _Located:
    """Cheap checks (stat only): the file exists, is a regular file inside the root and is not
    shorter than declared. Raises _Stop(Incomplete | Invalid)."""
    lexical = os.path.join(run_abs, decl.file)
    if "/" not in decl.file:
        # The common case, a plain file right in the (already resolved) run directory: one lstat
        # instead of realpath's walk over every component. Anything else takes the full path.
        try:
            st = os.lstat(os.path.join(run_real, decl.file))
        except OSError:
            pass
        else:
            if stat.S_ISREG(st.st_mode):
                _check_size(decl, st.st_size)
                return _Located(decl, lexical, os.path.join(run_real, decl.file), st.st_size)
    target = os.path.realpath(lexical)
    if not is_within(target, root_real):
        raise _Stop(
            Invalid(
                f"{decl.label} resolves to {_show_path(target)}, outside the artifacts root "
                f"{_show_path(root_real)} (a symbolic link leaving the root); "
                "copy the file into the run directory"
            )
        )
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        raise _Stop(missing_file(decl)) from None
    except NotADirectoryError:
        raise _Stop(Invalid(f"{decl.label}: a component of the path is not a directory")) from None
    except OSError as exc:
        raise _Stop(Invalid(f"{decl.label} cannot be examined: {exc.strerror or exc}")) from None
    if stat.S_ISLNK(st.st_mode):
        raise _Stop(Invalid(f"{decl.label} is a symbolic link that does not resolve (a loop?)"))
    if not stat.S_ISREG(st.st_mode):
        raise _Stop(Invalid(f"{decl.label} is {_kind(st.st_mode)}, not a regular Parquet file"))
    _check_size(decl, st.st_size)
    return _Located(decl, lexical, target, st.st_size)


def _locate_all(
    declared: list[_Declared], run_abs: str, run_real: str, root_real: str
) -> list[_Located]:
    """Stat every listed file. Any Invalid wins (reject now); otherwise the first Incomplete,
    naming every listed file that does not exist (``Incomplete.missing``)."""
    located: list[_Located] = []
    waiting: Incomplete | None = None
    missing: list[str] = []
    for decl in declared:
        try:
            located.append(_locate(decl, run_abs, run_real, root_real))
        except _Stop as stop:
            result = stop.result
            if isinstance(result, Invalid):
                raise
            missing.extend(result.missing)
            waiting = waiting or result
    if waiting is not None:
        raise _Stop(Incomplete(waiting.reason, missing=tuple(missing)))
    return located


#: How a missing listed file is named in a reason: ``artifact missing: <file>``.
MISSING_PREFIX = "artifact missing: "
_NOT_YET = " does not exist yet"


def missing_name(file: str) -> str:
    """A listed file's path as a reason names it: plain when printable, else quoted."""
    return file if file.isprintable() else _show(file)


def missing_file(decl: _Declared) -> Incomplete:
    """The wait for a listed file that does not exist (yet)."""
    return Incomplete(
        f"waiting for the producer: {MISSING_PREFIX}{missing_name(decl.file)} "
        f"({decl.label}{_NOT_YET})",
        missing=(decl.file,),
    )


def missing_as_final(reason: str) -> str:
    """A :func:`missing_file` reason for a run that is final (nothing more will be written):
    ``<label> is missing``."""
    start = reason.find(" (artifact ")
    if (
        reason.startswith("waiting for the producer: ")
        and start >= 0
        and reason.endswith(_NOT_YET + ")")
    ):
        return reason[start + 2 : -len(_NOT_YET) - 1] + " is missing"
    return reason


def _check_size(decl: _Declared, size: int) -> None:
    """Shorter than declared: still being written (Incomplete); longer: Invalid."""
    if decl.bytes is None:
        return
    if size < decl.bytes:
        raise _Stop(
            Incomplete(
                f"{decl.label} has {size} of its {decl.bytes} declared bytes; "
                "it is probably still being written"
            )
        )
    if size > decl.bytes:
        raise _Stop(
            Invalid(
                f"{decl.label} has {size} bytes but metadata.json declares "
                f"{decl.bytes}; rewrite metadata.json with the real size"
            )
        )


def read_parquet_footer(
    decl: _Declared, size: int, read_at: Callable[[int, int], bytes]
) -> tuple[int, str, Any]:
    """Check a Parquet file's magic bytes and footer through ``read_at(offset, length)`` (a
    local file or ranged reads of an object) and return its row count, its Arrow schema as
    JSON and the parsed footer (``pyarrow.parquet.FileMetaData``). Never reads a data page.
    Raises _Stop(Invalid | Incomplete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    not_parquet = f"{decl.label} is not a Parquet file (it must start and end with the bytes PAR1)"
    if size < 12:
        raise _Stop(Invalid(f"{not_parquet}; it has only {size} bytes"))
    head = read_at(0, 4)
    tail = read_at(size - 8, 8)
    if len(tail) != 8:
        raise _Stop(Incomplete(f"{decl.label} changed size while being read"))
    if head != _PAR1 or tail[4:] != _PAR1:
        if decl.bytes is None:
            hint = "; it may be truncated: write metadata.json only after the file is complete"
        else:
            hint = " although it has its full declared size"
        raise _Stop(Invalid(not_parquet + hint))
    footer_len = int.from_bytes(tail[:4], "little")
    if footer_len == 0 or footer_len > size - 12:
        raise _Stop(
            Invalid(
                f"{decl.label}: the Parquet footer is damaged (footer length {footer_len} "
                f"does not fit in a file of {size} bytes)"
            )
        )
    footer = read_at(size - 8 - footer_len, footer_len + 8)
    if len(footer) != footer_len + 8:
        raise _Stop(Incomplete(f"{decl.label} changed size while being read"))
    try:
        # The footer alone, framed as a minimal Parquet file: pyarrow parses it from memory
        # (no Python file object, no data pages).
        md = pq.read_metadata(pa.BufferReader(_PAR1 + footer))
        num_rows = int(md.num_rows)
        group_rows = sum(int(md.row_group(i).num_rows) for i in range(md.num_row_groups))
        schema_json = _schema_json(md.schema.to_arrow_schema())
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise _Stop(
            Invalid(
                f"{decl.label}: the Parquet footer cannot be read "
                f"({type(exc).__name__}: {str(exc)[:300]})"
            )
        ) from None
    if num_rows < 0 or group_rows != num_rows:
        raise _Stop(
            Invalid(
                f"{decl.label}: the Parquet footer is inconsistent: it says {num_rows} rows "
                f"but its row groups hold {group_rows}"
            )
        )
    if decl.rows is not None and decl.rows != num_rows:
        raise _Stop(
            Invalid(
                f"{decl.label} has {num_rows} rows in its Parquet footer but metadata.json "
                f"declares {decl.rows}; rewrite metadata.json with the real row count"
            )
        )
    return num_rows, schema_json, md


def _read_artifact(loc: _Located, verify_hashes: bool) -> ArtifactInfo:
    """Parquet magic bytes + footer (never the data pages), rows, sha256."""
    decl = loc.decl
    try:
        fd = _open_regular(loc.target)
    except FileNotFoundError:
        raise _Stop(Incomplete(f"{decl.label} disappeared while being read")) from None
    except _NotRegular as exc:
        raise _Stop(Invalid(f"{decl.label} is {exc}, not a regular Parquet file")) from None
    except OSError as exc:
        raise _Stop(Invalid(f"{decl.label} cannot be opened: {exc.strerror or exc}")) from None
    try:
        size = os.fstat(fd).st_size
        _check_size(decl, size)  # it may have changed since the lstat
        # A small file that is hashed anyway is read once: hash, magic bytes and footer all come
        # from that one read. Otherwise only the magic bytes and the footer are read.
        whole = os.pread(fd, size, 0) if verify_hashes and size <= WHOLE_READ_MAX else None
        if whole is not None and len(whole) != size:  # shrank while being read
            raise _Stop(Incomplete(f"{decl.label} changed size while being read"))

        def read_at(offset: int, length: int) -> bytes:
            if whole is not None:
                return whole[offset : offset + length]
            return os.pread(fd, length, offset)

        num_rows, schema_json, _ = read_parquet_footer(decl, size, read_at)
        sha = decl.sha256.lower() if decl.sha256 else None
        if verify_hashes:
            actual = (
                hashlib.sha256(whole).hexdigest() if whole is not None else _sha256_fd(fd, size)
            )
            if sha is not None and sha != actual:
                raise _Stop(
                    Invalid(
                        f"{decl.label} has sha256 {actual} but metadata.json declares {sha}; "
                        "the file changed after metadata.json was written, or the hash is wrong"
                    )
                )
            sha = actual
        return ArtifactInfo(
            name=decl.name,
            file=decl.file,
            path=Path(loc.lexical),
            format="parquet",
            rows=num_rows,
            bytes=size,
            sha256=sha,
            arrow_schema=schema_json,
        )
    finally:
        os.close(fd)


@lru_cache(maxsize=256)
def _schema_json(schema: Any) -> str:
    """The Arrow schema (a ``pyarrow.Schema``) as the catalog's JSON column list; runs of one
    producer share a handful of schemas, so this is cached (equal schemas, equal text)."""
    return json.dumps(
        [{"name": f.name, "type": str(f.type), "nullable": bool(f.nullable)} for f in schema]
    )


def _sha256_fd(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(HASH_CHUNK, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
