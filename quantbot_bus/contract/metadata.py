"""Reading metadata.json: the file itself (a regular file inside the root, at most
``MAX_METADATA_BYTES``, UTF-8), its JSON (no duplicate keys) and its tree (at most
``MAX_JSON_DEPTH`` levels, valid Unicode in every string). What the document means is
:mod:`.normalise`'s concern."""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from ..ignore import is_within
from .files import _kind, _NotRegular, _open_regular
from .model import MAX_JSON_DEPTH, MAX_METADATA_BYTES, METADATA_NAME, Incomplete, Invalid
from .reasons import _field_path, _show, _show_path, _Stop


@dataclass
class _Metadata:
    text: str
    mtime_ns: int
    stat: os.stat_result  # of the file as opened


def _read_metadata(run_abs: str, root_real: str, name: str = METADATA_NAME) -> _Metadata:
    """``name`` (metadata.json, or a seed run's run.json) read safely from the run directory."""
    path = os.path.join(run_abs, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _Stop(
            Incomplete(f"no {name} yet: the run is not finished ({name} is written last)")
        ) from None
    except NotADirectoryError:
        raise _Stop(Invalid("the run directory is not a directory")) from None
    target = path
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        if not is_within(target, root_real):
            raise _Stop(
                Invalid(
                    f"{name} is a symbolic link leading outside the artifacts root "
                    f"(to {_show_path(target)}); write a real {name} into the run directory"
                )
            )
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise _Stop(Incomplete(f"{name} is a symbolic link to a missing file")) from None
    if stat.S_ISDIR(st.st_mode):
        raise _Stop(
            Invalid(f"{name} is a directory; it must be a JSON file written by the producer")
        )
    if not stat.S_ISREG(st.st_mode):
        raise _Stop(Invalid(f"{name} is {_kind(st.st_mode)}, not a regular file"))
    if st.st_size > MAX_METADATA_BYTES:
        raise _Stop(
            Invalid(
                f"{name} is {st.st_size} bytes, over the {MAX_METADATA_BYTES} byte "
                f"(8 MiB) limit; keep large data in Parquet artifacts, not in {name}"
            )
        )
    try:
        fd = _open_regular(target)
    except FileNotFoundError:
        raise _Stop(Incomplete(f"{name} disappeared while being read")) from None
    except _NotRegular as exc:
        raise _Stop(Invalid(f"{name} is {exc}, not a regular file")) from None
    except OSError as exc:
        raise _Stop(Invalid(f"{name} cannot be opened: {exc.strerror or exc}")) from None
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
        raise _Stop(Invalid(f"{name} grew over the {MAX_METADATA_BYTES} byte (8 MiB) limit"))
    return _Metadata(decode_metadata(b"".join(chunks), name), fst.st_mtime_ns, fst)


def decode_metadata(raw: bytes, name: str = METADATA_NAME) -> str:
    """metadata.json's bytes as text (UTF-8, a BOM allowed), or a rejection."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Stop(
            Invalid(f"{name} is not UTF-8 text (invalid byte at offset {exc.start})")
        ) from None


def metadata_object(text: str, name: str = METADATA_NAME) -> dict[str, Any]:
    """metadata.json's text parsed and checked as a JSON object, or a rejection."""
    doc = _parse(text, name)
    _check_tree(doc, text, name)
    if not isinstance(doc, dict):
        raise _Stop(Invalid(f"{name} must hold a JSON object, got {_show(doc)}"))
    return doc


def _parse(text: str, name: str = METADATA_NAME) -> Any:
    if not text.strip():
        raise _Stop(
            Invalid(
                f"{name} is empty; write it to a temporary file and rename it into place "
                "only once it is complete"
            )
        )
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise _Stop(
            Invalid(f"{name}: the key {_show(exc.key, 40)} appears twice in one object")
        ) from None
    except json.JSONDecodeError as exc:
        raise _Stop(
            Invalid(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        ) from None
    except RecursionError:
        raise _Stop(
            Invalid(f"{name} is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
        ) from None
    except ValueError as exc:  # e.g. an integer with more than 4300 digits
        raise _Stop(Invalid(f"{name} cannot be parsed: {str(exc)[:200]}")) from None


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


def _check_tree(doc: Any, text: str | None = None, name: str = METADATA_NAME) -> None:
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
                        f"{name}: nested more than {MAX_JSON_DEPTH} levels deep "
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
                    raise _Stop(Invalid(_surrogate_reason(where, name)))
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, (*where, key)))
                elif isinstance(child, str) and not _is_unicode(child):
                    raise _Stop(Invalid(_surrogate_reason((*where, key), name)))
        elif strings and isinstance(value, str) and not _is_unicode(value):
            raise _Stop(Invalid(_surrogate_reason(where, name)))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_reason(where: tuple[Any, ...], name: str = METADATA_NAME) -> str:
    place = f" in field '{_field_path(where)}'" if where else ""
    return (
        f"{name}: a string{place} contains a lone surrogate escape (\\ud800-\\udfff), "
        "which is not valid Unicode; write names and values as valid UTF-8"
    )
