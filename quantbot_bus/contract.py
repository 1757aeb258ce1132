"""The run-directory contract (docs/contract.md): what a completed run looks like on disk.

This module is pure: it reads a run directory and answers :class:`Valid`, :class:`Incomplete`
or :class:`Invalid`. It never raises for bad input, never writes, and never builds SQL.

INTERFACE (shared by writer, catalog, watch, exports — do not change signatures lightly):

- ``METADATA_NAME = "metadata.json"``
- ``RUN_ID_RE``: the run_id pattern.
- :class:`ArtifactInfo`, :class:`RunInfo`: a validated run, normalised from either the v1 shape
  or the quantbot TypeScript-producer shape.
- ``validate_run_dir(run_dir, root, *, verify_hashes=True) -> Valid | Incomplete | Invalid``
- ``quick_fingerprint(run_dir) -> str | None``: cheap (stat-only) fingerprint of a run directory
  (metadata.json and the files it lists, by name, size and mtime_ns); ``None`` if there is no
  metadata.json. Equal fingerprints mean "unchanged, no need to validate again".
- ``iter_run_dirs(root) -> Iterator[Path]``: every run directory under root (a directory holding
  a ``metadata.json``), skipping hidden names; does not descend into a run directory.
- ``is_ignored(root, path) -> bool``: True if any component of ``path`` relative to root starts
  with ``.`` or the name ends with ``.tmp``/``.partial`` (or path is outside root).

Additions (compatible): ``ARTIFACT_NAME_RE``, ``MAX_METADATA_BYTES``, ``MAX_JSON_DEPTH``,
``load_run_schema()`` (the JSON Schema of metadata.json v1, shipped as ``run_schema.json``).
``fingerprint_of(run_dir, files) -> str | None``: the same fingerprint from a file list the caller
already knows (e.g. the catalog's artifacts), by stat alone: ``quick_fingerprint(run_dir) ==
fingerprint_of(run_dir, <the files metadata.json lists>)`` (the listed names are hashed sorted, so
their order in metadata.json does not matter). ``iter_run_dir_paths(root) -> Iterator[str]``:
:func:`iter_run_dirs` as plain strings (no ``Path`` objects, for large scans);
``walk_run_dirs(root) -> Iterator[tuple[str, os.stat_result]]``: the same with the lstat of each
metadata.json (pass it to ``fingerprint_of(..., metadata_lstat=...)``).
Paths yielded by :func:`iter_run_dirs` are absolute; ``iter_run_dirs`` also skips names ending in
``.tmp``/``.partial`` (consistent with :func:`is_ignored`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .ignore import IGNORED_SUFFIXES, is_ignored_name, is_within

METADATA_NAME = "metadata.json"
SCHEMA_VERSION = 1
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: Artifact names become table names: an identifier, at most 64 characters.
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: metadata.json larger than this is rejected without being read.
MAX_METADATA_BYTES = 8 * 1024 * 1024
#: metadata.json nested deeper than this (objects/lists inside each other) is rejected.
MAX_JSON_DEPTH = 64
#: Hashes are computed streamed, in chunks of this size.
HASH_CHUNK = 1024 * 1024
#: A Parquet file up to this size that is hashed anyway is read in one piece (hash + footer).
WHOLE_READ_MAX = 4 * 1024 * 1024
#: The shape name of runs written by the quantbot TypeScript producer.
QUANTBOT_TS = "quantbot-ts"

_TS_KEYS = ("backtest_type", "table_name", "parquet_file")
_TS_FIELDS = frozenset({"run_id", "rows", "created_at_utc", "parquet_path", *_TS_KEYS})
_MAX_REASON = 2000
_PAR1 = b"PAR1"


@dataclass(frozen=True)
class ArtifactInfo:
    name: str  # table name, e.g. "backtest_call_path_metrics"
    file: str  # relative to the run directory, POSIX separators
    path: Path  # absolute path of the file
    format: str  # "parquet"
    rows: int  # from the Parquet footer (checked against metadata when declared)
    bytes: int  # file size on disk
    sha256: str | None  # as declared in metadata (verified when verify_hashes) or computed
    arrow_schema: str  # the Arrow schema as JSON: [{"name":..., "type":..., "nullable":...}, ...]


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_type: str
    producer: str
    producer_version: str | None
    status: str  # "success" | "failed"
    created_at: str | None  # ISO-8601 UTC strings as given (normalised to ...Z where parseable)
    started_at: str | None
    finished_at: str | None
    params: dict[str, Any]
    metrics: dict[str, float]
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    host: str | None
    error: str | None
    artifacts: tuple[ArtifactInfo, ...]
    run_dir: Path  # absolute
    metadata_json: str  # the raw metadata.json text
    metadata_mtime_ns: int  # mtime of metadata.json (for latency = commit time - this)
    fingerprint: str  # == quick_fingerprint(run_dir) at validation time
    shape: str = "v1"  # "v1" | "quantbot-ts"

    @property
    def total_rows(self) -> int:
        return sum(a.rows for a in self.artifacts)

    @property
    def total_bytes(self) -> int:
        return sum(a.bytes for a in self.artifacts)


@dataclass(frozen=True)
class Valid:
    run: RunInfo
    ok: bool = field(default=True, init=False)


@dataclass(frozen=True)
class Incomplete:
    """Not ready yet (may still be in progress): look again later."""

    reason: str
    ok: bool = field(default=False, init=False)


@dataclass(frozen=True)
class Invalid:
    """Broken: reject with a reason a person can act on."""

    reason: str
    run_id: str | None = None
    ok: bool = field(default=False, init=False)


ValidationResult = Valid | Incomplete | Invalid


# --------------------------------------------------------------------------- helpers


class _Stop(Exception):
    """Internal: carries the verdict out of the nested checks."""

    def __init__(self, result: Incomplete | Invalid) -> None:
        super().__init__(result.reason)
        self.result = result


def _clean(reason: str) -> str:
    """A reason that is valid UTF-8 (lone surrogates escaped) and of bounded length."""
    text = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 15] + "... (truncated)"
    return text


def _show(value: Any, limit: int = 60) -> str:
    """A short, printable rendering of a JSON value for error messages."""
    if isinstance(value, str):
        if len(value) > limit:
            return repr(value[:limit]) + f"... ({len(value)} characters)"
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a huge integer"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # pragma: no cover - JSON only yields the types above


def _show_path(path: str | os.PathLike[str]) -> str:
    return repr(os.fspath(path))


def _field_path(parts: Any) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{_show(part, 40)}]"
    return out


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _open_regular(path: str) -> int:
    """Open a regular file for reading without following a final symlink and without blocking
    (a FIFO swapped in after the lstat never hangs). Raises OSError, or _NotRegular."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _NotRegular(st.st_mode)
    return fd


class _NotRegular(Exception):
    def __init__(self, mode: int) -> None:
        super().__init__(_kind(mode))
        self.mode = mode


@cache
def load_run_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of metadata.json v1, loaded once from the package."""
    text = resources.files("quantbot_bus").joinpath("run_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with its local ``#/$defs/...`` references substituted (a third faster to
    evaluate than resolving them on every document)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


@cache
def _validators() -> tuple[Any, Any]:
    """The full validators (jsonschema): slow, but they say exactly what is wrong."""
    from jsonschema import Draft202012Validator

    schema = load_run_schema()
    defs = schema["$defs"]
    return (
        Draft202012Validator(_inline_refs(schema, defs)),
        Draft202012Validator(_inline_refs(defs["quantbot_ts"], defs)),
    )


def _fast_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A schema for fastjsonschema: references inlined, no ``$id``/``x-expect``, declared draft-07
    (every keyword the run schema uses means the same in draft-07 and 2020-12)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "x-expect"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out: dict[str, Any] = strip(node)
    out.pop("$id", None)
    out["$schema"] = "http://json-schema.org/draft-07/schema#"
    return out


@cache
def _fast_validators() -> tuple[Any, Any]:
    """Compiled (fastjsonschema) validators: the fast path for documents that are valid. Only a
    "valid" answer is trusted; on anything else the full validator decides and explains."""
    import fastjsonschema

    schema = load_run_schema()
    defs = schema["$defs"]

    def compile_(node: dict[str, Any]) -> Any:
        return fastjsonschema.compile(_fast_schema(_inline_refs(node, defs)), use_default=False)

    return compile_(schema), compile_(defs["quantbot_ts"])


def _schema_problem(doc: Any, shape: str) -> str | None:
    """None if ``doc`` matches the schema of ``shape``, else the reason (full validator)."""
    index = 1 if shape == QUANTBOT_TS else 0
    fast = _fast_validators()[index]  # compiled once; a failure to compile is a bug: raise
    try:
        fast(doc)
    except Exception:  # JsonSchemaValueException, or anything odd: let the full validator decide
        return _first_schema_error(_validators()[index], doc, shape)
    return None


# --------------------------------------------------------------------------- JSON


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


#: A JSON escape of a surrogate (\ud800-\udfff): the only way a decoded document can hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_tree(doc: Any, text: str | None = None) -> None:
    """Depth limit and valid Unicode everywhere (iterative, so hostile input cannot recurse).

    ``text``: the JSON text ``doc`` was parsed from; when it holds no surrogate escape, no string
    can hold a lone surrogate and only the depth is checked."""
    strings = text is None or _SURROGATE_ESCAPE.search(text) is not None
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(doc, 1, ())]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise _Stop(
                    Invalid(
                        f"metadata.json: nested more than {MAX_JSON_DEPTH} levels deep "
                        f"(at '{_field_path(where[:8])}...'); flatten the structure"
                    )
                )
            if not strings:
                pairs = value.items() if isinstance(value, dict) else enumerate(value)
                stack.extend(
                    (child, depth + 1, (*where, key))
                    for key, child in pairs
                    if isinstance(child, dict | list)
                )
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and not _is_unicode(key):
                    raise _Stop(Invalid(_surrogate_reason(where)))
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, (*where, key)))
                elif isinstance(child, str) and not _is_unicode(child):
                    raise _Stop(Invalid(_surrogate_reason((*where, key))))
        elif strings and isinstance(value, str) and not _is_unicode(value):
            raise _Stop(Invalid(_surrogate_reason(where)))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_reason(where: tuple[Any, ...]) -> str:
    place = f" in field '{_field_path(where)}'" if where else ""
    return (
        f"metadata.json: a string{place} contains a lone surrogate escape (\\ud800-\\udfff), "
        "which is not valid Unicode; write names and values as valid UTF-8"
    )


def _schema_reason(error: Any, shape: str) -> str:
    """One sentence from a jsonschema error, naming the field path."""
    path = list(error.absolute_path)
    where = _field_path(path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    expect = schema.get("x-expect")
    suffix = " (quantbot TypeScript-producer shape)" if shape == QUANTBOT_TS else ""
    kind = error.validator
    if kind == "required" and isinstance(error.instance, dict):
        missing = [
            _field_path([*path, k]) for k in error.validator_value if k not in error.instance
        ]
        hint = ""
        if "schema_version" in missing:
            hint = ' (this release understands contract v1: add "schema_version": 1)'
        if len(missing) == 1:
            return f"metadata.json: required field '{missing[0]}' is missing{hint}{suffix}"
        names = ", ".join(f"'{m}'" for m in missing)
        return f"metadata.json: required fields {names} are missing{hint}{suffix}"
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        place = f" in '{where}'" if where else ""
        hint = "; put free-form values in 'params'" if not where else ""
        first = _show(extra[0], 40) if extra else "?"
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        return (
            f"metadata.json: unknown field {first}{more}{place}; "
            f"allowed fields are {', '.join(allowed)}{hint}{suffix}"
        )
    if expect:
        if not where:
            return f"metadata.json must hold {expect}, got {_show(error.instance)}{suffix}"
        return (
            f"metadata.json: field '{where}' must be {expect}, got {_show(error.instance)}{suffix}"
        )
    target = f"field '{where}'" if where else "the document"
    return f"metadata.json: {target}: {error.message[:200]}{suffix}"


def _first_schema_error(validator: Any, doc: Any, shape: str) -> str | None:
    errors = []
    seen_required: set[tuple[Any, ...]] = set()
    for error in validator.iter_errors(doc):
        if error.validator == "required":  # one error per missing key: report them together
            key = tuple(error.absolute_path)
            if key in seen_required:
                continue
            seen_required.add(key)
        errors.append(error)
    if not errors:
        return None
    errors.sort(
        key=lambda e: (
            len(e.absolute_path),
            [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in e.absolute_path],
            e.validator != "required",
        )
    )
    reason = _schema_reason(errors[0], shape)
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return reason


# --------------------------------------------------------------------------- timestamps


def _utc_timestamp(value: str, where: str) -> str:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise _Stop(
            Invalid(
                f"metadata.json: field '{where}' is not an ISO-8601 timestamp: {_show(value)}; "
                'write e.g. "2024-05-01T12:00:00Z"'
            )
        ) from None
    if dt.tzinfo is None or dt.utcoffset() != timedelta(0):
        raise _Stop(
            Invalid(
                f"metadata.json: field '{where}' must be in UTC (end with Z or +00:00), "
                f"got {_show(value)}"
            )
        )
    dt = dt.astimezone(UTC)
    text = (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )
    if dt.microsecond:
        text += f".{dt.microsecond:06d}"
    return text + "Z"


# --------------------------------------------------------------------------- artifacts


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
        raise _Stop(
            Incomplete(f"{decl.label} does not exist yet; waiting for the producer to write it")
        ) from None
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
    """Stat every listed file. Any Invalid wins (reject now); otherwise the first Incomplete."""
    located: list[_Located] = []
    waiting: Incomplete | None = None
    for decl in declared:
        try:
            located.append(_locate(decl, run_abs, run_real, root_real))
        except _Stop as stop:
            if isinstance(stop.result, Invalid):
                raise
            waiting = waiting or stop.result
    if waiting is not None:
        raise _Stop(waiting)
    return located


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


def _read_artifact(loc: _Located, verify_hashes: bool) -> ArtifactInfo:
    """Parquet magic bytes + footer (never the data pages), rows, sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

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
        not_parquet = (
            f"{decl.label} is not a Parquet file (it must start and end with the bytes PAR1)"
        )
        if size < 12:
            raise _Stop(Invalid(f"{not_parquet}; it has only {size} bytes"))
        # A small file that is hashed anyway is read once: hash, magic bytes and footer all come
        # from that one read. Otherwise only the magic bytes and the footer are read.
        whole = os.pread(fd, size, 0) if verify_hashes and size <= WHOLE_READ_MAX else None
        if whole is not None and len(whole) != size:  # shrank while being read
            raise _Stop(Incomplete(f"{decl.label} changed size while being read"))
        head = whole[:4] if whole is not None else os.pread(fd, 4, 0)
        tail = whole[-8:] if whole is not None else os.pread(fd, 8, size - 8)
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
        start = size - 8 - footer_len
        if whole is not None:
            footer = whole[start:]
        else:
            footer = os.pread(fd, footer_len + 8, start)
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


# --------------------------------------------------------------------------- metadata.json


@dataclass
class _Metadata:
    text: str
    mtime_ns: int
    stat: os.stat_result  # of the file as opened


def _read_metadata(run_abs: str, root_real: str) -> _Metadata:
    path = os.path.join(run_abs, METADATA_NAME)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _Stop(
            Incomplete(
                "no metadata.json yet: the run is not finished (metadata.json is written last)"
            )
        ) from None
    except NotADirectoryError:
        raise _Stop(Invalid("the run directory is not a directory")) from None
    target = path
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        if not is_within(target, root_real):
            raise _Stop(
                Invalid(
                    "metadata.json is a symbolic link leading outside the artifacts root "
                    f"(to {_show_path(target)}); write a real metadata.json into the run directory"
                )
            )
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise _Stop(Incomplete("metadata.json is a symbolic link to a missing file")) from None
    if stat.S_ISDIR(st.st_mode):
        raise _Stop(
            Invalid("metadata.json is a directory; it must be a JSON file written by the producer")
        )
    if not stat.S_ISREG(st.st_mode):
        raise _Stop(Invalid(f"metadata.json is {_kind(st.st_mode)}, not a regular file"))
    if st.st_size > MAX_METADATA_BYTES:
        raise _Stop(
            Invalid(
                f"metadata.json is {st.st_size} bytes, over the {MAX_METADATA_BYTES} byte "
                "(8 MiB) limit; keep large data in Parquet artifacts, not in metadata.json"
            )
        )
    try:
        fd = _open_regular(target)
    except FileNotFoundError:
        raise _Stop(Incomplete("metadata.json disappeared while being read")) from None
    except _NotRegular as exc:
        raise _Stop(Invalid(f"metadata.json is {exc}, not a regular file")) from None
    except OSError as exc:
        raise _Stop(Invalid(f"metadata.json cannot be opened: {exc.strerror or exc}")) from None
    try:
        fst = os.fstat(fd)
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_METADATA_BYTES:
            chunk = os.read(fd, min(1024 * 1024, MAX_METADATA_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > MAX_METADATA_BYTES:
        raise _Stop(Invalid(f"metadata.json grew over the {MAX_METADATA_BYTES} byte (8 MiB) limit"))
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Stop(
            Invalid(f"metadata.json is not UTF-8 text (invalid byte at offset {exc.start})")
        ) from None
    return _Metadata(text, fst.st_mtime_ns, fst)


def _parse(text: str) -> Any:
    if not text.strip():
        raise _Stop(
            Invalid(
                "metadata.json is empty; write it to a temporary file and rename it into place "
                "only once it is complete"
            )
        )
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise _Stop(
            Invalid(f"metadata.json: the key {_show(exc.key, 40)} appears twice in one object")
        ) from None
    except json.JSONDecodeError as exc:
        raise _Stop(
            Invalid(
                f"metadata.json is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}"
            )
        ) from None
    except RecursionError:
        raise _Stop(
            Invalid(f"metadata.json is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
        ) from None
    except ValueError as exc:  # e.g. an integer with more than 4300 digits
        raise _Stop(Invalid(f"metadata.json cannot be parsed: {str(exc)[:200]}")) from None


# --------------------------------------------------------------------------- validation


@dataclass
class _Normalised:
    run_id: str
    run_type: str
    producer: str
    producer_version: str | None
    status: str
    created_at: str
    started_at: str
    finished_at: str
    params: dict[str, Any]
    metrics: dict[str, float]
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    host: str | None
    error: str | None
    declared: list[_Declared]
    shape: str


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


def _normalise_v1(doc: dict[str, Any]) -> _Normalised:
    version = doc.get("schema_version")
    if (
        isinstance(version, int | float)
        and not isinstance(version, bool)
        and math.isfinite(version)
        and version > SCHEMA_VERSION
    ):
        shown = int(version) if float(version).is_integer() else version
        raise _Stop(
            Invalid(
                f"metadata.json was written for contract v{shown}, this release understands "
                f"v{SCHEMA_VERSION}; upgrade quantbot-bus"
            )
        )
    problem = _schema_problem(doc, "v1")
    if problem:
        raise _Stop(Invalid(problem))
    metrics: dict[str, float] = {}
    for key, value in doc.get("metrics", {}).items():
        try:
            metrics[key] = float(value)
        except OverflowError:
            raise _Stop(
                Invalid(f"metadata.json: metric {_show(key, 40)} is too large for a 64-bit float")
            ) from None
    git = doc.get("git") or {}
    producer = doc["producer"]
    declared = [
        _Declared(
            index=i,
            name=a["name"],
            file=a["file"],
            rows=_count(a.get("rows")),
            bytes=_count(a.get("bytes")),
            sha256=a.get("sha256"),
        )
        for i, a in enumerate(doc["artifacts"])
    ]
    return _Normalised(
        run_id=doc["run_id"],
        run_type=doc["run_type"],
        producer=producer["name"],
        producer_version=producer.get("version"),
        status=doc["status"],
        created_at=_utc_timestamp(doc["created_at"], "created_at"),
        started_at=_utc_timestamp(doc["started_at"], "started_at"),
        finished_at=_utc_timestamp(doc["finished_at"], "finished_at"),
        params=doc["params"],
        metrics=metrics,
        git_commit=git.get("commit"),
        git_branch=git.get("branch"),
        git_dirty=git.get("dirty"),
        host=doc.get("host"),
        error=doc.get("error"),
        declared=declared,
        shape="v1",
    )


def _normalise_ts(doc: dict[str, Any]) -> _Normalised:
    problem = _schema_problem(doc, QUANTBOT_TS)
    if problem:
        raise _Stop(Invalid(problem))
    created = _utc_timestamp(doc["created_at_utc"], "created_at_utc")
    params: dict[str, Any] = {"backtest_type": doc["backtest_type"]}
    params.update((k, v) for k, v in doc.items() if k not in _TS_FIELDS)
    return _Normalised(
        run_id=doc["run_id"],
        run_type="backtest",
        producer=QUANTBOT_TS,
        producer_version=None,
        status="success",
        created_at=created,
        started_at=created,
        finished_at=created,
        params=params,
        metrics={},
        git_commit=None,
        git_branch=None,
        git_dirty=None,
        host=None,
        error=None,
        declared=[
            _Declared(
                index=0,
                name=doc["table_name"],
                file=doc["parquet_file"],
                rows=int(doc["rows"]),
                bytes=None,
                sha256=None,
            )
        ],
        shape=QUANTBOT_TS,
    )


def _check_semantics(norm: _Normalised, dir_name: str) -> None:
    if not RUN_ID_RE.fullmatch(norm.run_id):
        raise _Stop(
            Invalid(
                f"metadata.json: field 'run_id' must be 1-128 characters from A-Z a-z 0-9 . _ - "
                f"starting with a letter or digit, got {_show(norm.run_id)}"
            )
        )
    if norm.run_id != dir_name:
        raise _Stop(
            Invalid(
                f"run_id {_show(norm.run_id)} in metadata.json does not match the directory name "
                f"{_show(dir_name)}; name the directory after the run_id",
                run_id=norm.run_id,
            )
        )
    if norm.status == "failed" and not (isinstance(norm.error, str) and norm.error.strip()):
        raise _Stop(
            Invalid(
                "metadata.json: status is 'failed' but there is no 'error'; "
                "say what went wrong in the 'error' field",
                run_id=norm.run_id,
            )
        )
    if norm.status == "success" and not norm.declared:
        raise _Stop(
            Invalid(
                "metadata.json: status is 'success' but 'artifacts' is empty; a successful run "
                "must list at least one Parquet file",
                run_id=norm.run_id,
            )
        )
    seen_names: dict[str, _Declared] = {}
    seen_files: dict[str, _Declared] = {}
    for decl in norm.declared:
        key = decl.name.lower()
        if key in seen_names:
            raise _Stop(
                Invalid(
                    f"metadata.json: artifact name {decl.name!r} is used twice (artifacts "
                    f"[{seen_names[key].index}] and [{decl.index}]; table names are "
                    "case-insensitive); give each table its own name",
                    run_id=norm.run_id,
                )
            )
        seen_names[key] = decl
        _check_file_string(decl)
        if decl.file in seen_files:
            raise _Stop(
                Invalid(
                    f"metadata.json: {decl.label} uses the same file as artifact "
                    f"{seen_files[decl.file].name!r}",
                    run_id=norm.run_id,
                )
            )
        seen_files[decl.file] = decl


def _validate(run_dir: Path, root: Path, verify_hashes: bool) -> ValidationResult:
    root_real = os.path.realpath(os.fspath(root))
    run_abs = os.path.abspath(os.fspath(run_dir))
    run_real = os.path.realpath(run_abs)
    if not is_within(run_real, root_real) or run_real == root_real:
        return Invalid(
            f"{_show_path(run_abs)} is not a directory below the artifacts root "
            f"{_show_path(root_real)}"
        )
    if not _is_unicode(run_abs):
        return Invalid(
            f"the run directory path {_show_path(run_abs)} is not valid UTF-8; rename it "
            "(paths are stored in the catalog and read by DuckDB as UTF-8 text)"
        )
    try:
        st = os.lstat(run_abs)
    except FileNotFoundError:
        return Incomplete("the run directory does not exist (it may have been moved or deleted)")
    if stat.S_ISLNK(st.st_mode):
        return Invalid(
            "the run directory is a symbolic link; runs are read only from their real directory"
        )
    if not stat.S_ISDIR(st.st_mode):
        return Invalid(f"the run directory is {_kind(st.st_mode)}, not a directory")
    meta = _read_metadata(run_abs, root_real)  # a missing metadata.json: Incomplete
    doc = _parse(meta.text)
    _check_tree(doc, meta.text)
    if not isinstance(doc, dict):
        return Invalid(f"metadata.json must hold a JSON object, got {_show(doc)}")
    # == quick_fingerprint(run_abs): metadata.json as opened (before it was read) and the files it
    # lists, statted before they are read, so a later change always shows as a new fingerprint.
    fingerprint = _fingerprint(run_abs, meta.stat, _files_in(doc))
    declared_id = doc.get("run_id")
    try:
        if "schema_version" not in doc and any(k in doc for k in _TS_KEYS):
            norm = _normalise_ts(doc)
        else:
            norm = _normalise_v1(doc)
        _check_semantics(norm, os.path.basename(run_abs))
        located = _locate_all(norm.declared, run_abs, run_real, root_real)
        artifacts = tuple(_read_artifact(loc, verify_hashes) for loc in located)
    except _Stop as stop:
        # name the run in the rejection whenever metadata.json gives a well-formed run_id
        result = stop.result
        if (
            isinstance(result, Invalid)
            and result.run_id is None
            and isinstance(declared_id, str)
            and RUN_ID_RE.fullmatch(declared_id)
        ):
            raise _Stop(Invalid(result.reason, run_id=declared_id)) from None
        raise
    return Valid(
        RunInfo(
            run_id=norm.run_id,
            run_type=norm.run_type,
            producer=norm.producer,
            producer_version=norm.producer_version,
            status=norm.status,
            created_at=norm.created_at,
            started_at=norm.started_at,
            finished_at=norm.finished_at,
            params=norm.params,
            metrics=norm.metrics,
            git_commit=norm.git_commit,
            git_branch=norm.git_branch,
            git_dirty=norm.git_dirty,
            host=norm.host,
            error=norm.error,
            artifacts=artifacts,
            run_dir=Path(run_abs),
            metadata_json=meta.text,
            metadata_mtime_ns=meta.mtime_ns,
            fingerprint=fingerprint,
            shape=norm.shape,
        )
    )


def validate_run_dir(run_dir: Path, root: Path, *, verify_hashes: bool = True) -> ValidationResult:
    """Check one run directory against the contract (docs/contract.md).

    Returns :class:`Valid` (with a normalised :class:`RunInfo`), :class:`Incomplete` (no
    metadata.json yet, or a listed file missing/shorter than declared: look again later) or
    :class:`Invalid` (reject, with a reason naming the field or file). Never raises for any
    input: an unexpected failure becomes ``Invalid`` naming the exception. Never opens anything
    but regular files, never reads Parquet data pages, reads at most 8 MiB of metadata.json and
    streams sha256 in 1 MiB chunks (only when ``verify_hashes``).
    """
    try:
        result = _validate(run_dir, root, verify_hashes)
    except _Stop as stop:
        result = stop.result
    except RecursionError:
        result = Invalid(f"metadata.json is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
    except MemoryError:
        result = Invalid("validation ran out of memory; the run directory is too large or hostile")
    except Exception as exc:  # never raise: one poison run must not stop the others
        result = Invalid(
            f"unexpected error while validating this run: {type(exc).__name__}: {str(exc)[:300]}"
        )
    if isinstance(result, Incomplete):
        return Incomplete(_clean(result.reason))
    if isinstance(result, Invalid):
        return Invalid(_clean(result.reason), run_id=result.run_id)
    return result


# --------------------------------------------------------------------------- fingerprint


def _files_in(doc: Any) -> list[str]:
    """The file names a parsed metadata.json lists, read loosely (anything odd: none)."""
    if not isinstance(doc, dict):
        return []
    files: list[str] = []
    artifacts = doc.get("artifacts")
    if isinstance(artifacts, list):
        for item in artifacts:
            if isinstance(item, dict) and isinstance(item.get("file"), str):
                files.append(item["file"])
    elif isinstance(doc.get("parquet_file"), str):
        files.append(doc["parquet_file"])
    return files


def _listed_files(path: str) -> list[str]:
    """The file names metadata.json lists, parsed loosely (any problem: none)."""
    try:
        fd = _open_regular(path)
    except (OSError, _NotRegular):
        return []
    try:
        raw = os.read(fd, MAX_METADATA_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_METADATA_BYTES:
        return []
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return []
    return _files_in(doc)


def _fingerprint_line(name: str, s: os.stat_result | None) -> bytes:
    if s is None:
        text = f"{name}\x00missing"
    else:
        text = f"{name}\x00{s.st_size}\x00{s.st_mtime_ns}\x00{s.st_mode & _S_IFMT}"
    return text.encode("utf-8", "surrogatepass") + b"\n"


_S_IFMT = 0o170000  # stat.S_IFMT(mode) == mode & _S_IFMT, without a function call per file


def _fingerprint(base: str, meta_st: os.stat_result, files: Iterable[str]) -> str:
    """blake2b over (name, size, mtime_ns, file type) of metadata.json (``meta_st``, symlink
    already followed) and of each listed file, in sorted order (stat only)."""
    parts = [_fingerprint_line(METADATA_NAME, meta_st)]
    prefix = base if base.endswith("/") else base + "/"
    try:
        for name in sorted(set(files)):
            # os.path.join(base, name), without its cost: an absolute name replaces the base
            path = name if name.startswith("/") else prefix + name
            try:
                fst: os.stat_result | None = os.stat(path)
            except (OSError, ValueError):
                fst = None
            parts.append(_fingerprint_line(name, fst))
    except Exception:  # a hostile listing must not break the scan; stat-only fallback
        parts = parts[:1]
    return hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()


def _metadata_stat(base: str, lst: os.stat_result | None = None) -> os.stat_result | None:
    """The stat of ``base/metadata.json`` (a symlink followed when it resolves), None if absent.
    ``lst``: its lstat, when the caller just took it."""
    meta = (base if base.endswith("/") else base + "/") + METADATA_NAME
    if lst is not None:
        st = lst
    else:
        try:
            st = os.lstat(meta)
        except (OSError, ValueError):
            return None
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(meta)
        except (OSError, ValueError):
            pass
    return st


def fingerprint_of(
    run_dir: str | os.PathLike[str],
    files: Iterable[str],
    *,
    metadata_lstat: os.stat_result | None = None,
) -> str | None:
    """:func:`quick_fingerprint` of ``run_dir`` for a file list the caller already knows (names
    relative to the run directory, as metadata.json lists them; any order): metadata.json's own
    stat and each file's stat, no parsing. Equal to ``quick_fingerprint(run_dir)`` when ``files``
    are the files its metadata.json lists. ``None`` if there is no metadata.json. Never raises.

    ``metadata_lstat``: ``os.lstat`` of the run's metadata.json if the caller just took it (as
    :func:`walk_run_dirs` does), saving one system call per run."""
    base = os.fspath(run_dir)
    st = _metadata_stat(base, metadata_lstat)
    if st is None:
        return None
    return _fingerprint(base, st, files)


def quick_fingerprint(run_dir: Path) -> str | None:
    """Cheap fingerprint of a run directory: blake2b over (name, size, mtime_ns) of
    metadata.json and of each file it lists (stat only, contents are never hashed).
    ``None`` if there is no metadata.json. Never raises."""
    base = os.fspath(run_dir)
    meta = os.path.join(base, METADATA_NAME)
    try:
        lst = os.lstat(meta)
    except (OSError, ValueError):
        return None
    st = _metadata_stat(base, lst)
    if st is None:  # pragma: no cover - _metadata_stat never fails once given the lstat
        return None
    try:
        readable = stat.S_ISREG(st.st_mode) and st.st_size <= MAX_METADATA_BYTES
        # a symlinked metadata.json is listed from its target, as the validator reads it
        path = os.path.realpath(meta) if stat.S_ISLNK(lst.st_mode) else meta
        files = _listed_files(path) if readable else []
    except Exception:  # never raise: an odd listing counts as none
        files = []
    return _fingerprint(base, st, files)


# --------------------------------------------------------------------------- scanning


def iter_run_dirs(root: Path) -> Iterator[Path]:
    """Every run directory below ``root`` (absolute paths, sorted per directory).

    See :func:`iter_run_dir_paths` (the same walk, yielding strings).
    """
    for path in iter_run_dir_paths(root):
        yield Path(path)


def iter_run_dir_paths(root: str | os.PathLike[str]) -> Iterator[str]:
    """Every run directory below ``root`` (absolute paths as strings, sorted per directory);
    see :func:`walk_run_dirs`."""
    for path, _ in walk_run_dirs(root):
        yield path


def walk_run_dirs(root: str | os.PathLike[str]) -> Iterator[tuple[str, os.stat_result]]:
    """Every run directory below ``root`` with the ``os.lstat`` of its metadata.json (absolute
    paths as strings, sorted per directory).

    A directory holding ``metadata.json`` (of any file type: the validator reports broken ones)
    is a run directory and is not descended into. Hidden names and names ending in
    ``.tmp``/``.partial`` are skipped; symlinked directories are never followed. The root itself
    is never a run directory. Directories that cannot be listed are skipped (logged as
    ``scan.dir_unreadable``). One ``lstat`` per candidate plus one ``scandir`` per plain directory.
    """
    top = os.path.abspath(os.fspath(root))
    stack: list[str] = [top]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                subdirs = []
                for entry in it:
                    if is_ignored_name(entry.name):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.name)
                    except OSError:
                        continue
        except FileNotFoundError:
            continue
        except OSError as exc:
            from .log import get_logger

            get_logger(__name__).warning(
                "scan.dir_unreadable", path=current, error=exc.strerror or str(exc)
            )
            continue
        subdirs.sort()
        descend: list[str] = []
        prefix = current if current.endswith("/") else current + "/"  # os.path.join, cheaper
        for name in subdirs:
            path = prefix + name
            try:
                meta_st = os.lstat(path + "/" + METADATA_NAME)
            except OSError:  # no metadata.json (or unreadable): a plain directory
                descend.append(path)
                continue
            yield path, meta_st
        stack.extend(reversed(descend))
