"""The whole-file exports: the summary files and the user ``[[exports]]``, on a bounded cadence.

Each file is written to a new name under :data:`~quantbot_bus.exports.store.FILES_DIR`
(``<name>.<token>.parquet|csv``); the publication links it into its next generation, and readers'
views ``exports.<name>`` read the published file. A refresh counts, per file, the changes that
fed it (``file_gen:<name>`` in the meta, :func:`bump_generations`); :func:`write_files` rewrites a
file whose count moved on, but at most once per :data:`FILE_WRITE_SPACING` x the time its last
write took, so the whole-file rewrites take a bounded share of the time at any history size.
``_export_status.json`` records per export: kind, last_run_at, rows, ms, ok, error, file, gen.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb

from ..config import Config
from ..log import get_logger
from ..timeutil import age_s, iso_utc
from . import plugins
from .sql import q
from .state import StateTx, state_table_exists
from .store import FILES_DIR, STATUS_NAME, copy_to, read_status, write_json
from .summaries import CATALOG_SQL

log = get_logger("quantbot_bus.exports")

FILE_WRITE_SPACING = 10.0  #: a whole file is rewritten at most once per this × its last write time
_USER_GEN = "_user"  # the generation key of the user exports (any run change feeds them)


def bump_generations(
    tx: StateTx, *, changed: bool, latest_changed: bool, touched_flags: set[str]
) -> None:
    """Count, per export file, the state changes that feed it (``file_gen:<name>`` in the meta;
    ``tx``'s transaction): ``changed`` runs came in or left, ``latest_changed`` the newest
    artifacts changed, ``touched_flags`` the feed flags of the runs that moved."""
    feeds: dict[str, str | None] = dict.fromkeys(CATALOG_SQL)
    feeds.update((s.name, s.feed.column if s.feed else None) for s in plugins.summaries())
    fed = []
    for name, feed in feeds.items():
        if name == "latest_artifacts":
            hit = latest_changed
        else:
            hit = changed if feed is None else feed in touched_flags
        if hit:
            fed.append(name)
    if changed:
        fed.append(_USER_GEN)
    for name in fed:
        key = "file_gen:" + name
        tx.set(key, str(int(tx.get(key) or 0) + 1))


def file_generations(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Per export file, how many refreshes fed it so far (``file_gen:<name>`` in the state of
    the working catalog ``con``); empty before the first refresh."""
    if not state_table_exists(con, "meta"):
        return {}
    return {
        str(k): str(v)
        for k, v in con.execute(
            "SELECT substr(key, 10), value FROM exports_state.meta WHERE key LIKE 'file_gen:%'"
        ).fetchall()
    }


def write_files(
    config: Config,
    con: duckdb.DuckDBPyConnection | None,
    gens: dict[str, str],
    *,
    kind: str,
    force: bool = False,
) -> dict[str, Any]:
    """Write the export files of one ``kind`` whose contents changed, each to a new name under
    :data:`FILES_DIR` (the publication links them into its next generation); record them in
    ``_export_status.json``.

    ``kind`` ``"summary"``: the summary ``<name>.parquet`` files, from the ``exports.*`` views of
    the working catalog ``con`` (over its state tables). ``kind`` ``"user"``: the ``[[exports]]``
    of the config, their SQL run on ``con``, a read-only connection to the publication (the
    reader-side catalog the docs promise them). ``gens`` is :func:`file_generations`.

    A file is rewritten when the refreshes since its last write fed it, when it is missing, or
    when its last write failed; but, unless ``force``, at most once per
    :data:`FILE_WRITE_SPACING` times the duration of its last write (a 30 ms file at most every
    0.3 s, a 300 ms one every 3 s), so rewriting whole files takes at most about a tenth of the
    time however large the history grows. Returns ``written`` (names), ``files`` (name -> the
    current file of every export of this kind that has one) and ``next_due_in_s`` (seconds until
    a held-back file is due, or None). A failing file is reported (``export.failed``,
    ``ok: false`` in the status) and the others are still written.
    """
    exports_dir = Path(config.exports_dir)
    store = exports_dir / FILES_DIR
    store.mkdir(parents=True, exist_ok=True)
    status = read_status(exports_dir)
    entries: dict[str, Any] = status.setdefault("exports", {})
    if kind == "summary":
        jobs = [(n, f"SELECT * FROM exports.{q(n)}", "parquet") for n in plugins.summary_names()]
        if not gens:  # no refresh yet: nothing to write
            return {"written": [], "files": {}, "next_due_in_s": None}
    else:
        jobs = [(e.name, e.sql.strip().rstrip(";").strip(), e.format) for e in config.exports]
    written: list[str] = []
    files: dict[str, Path] = {}
    next_due: float | None = None
    for name, sql, fmt in jobs:
        if con is None:
            raise ValueError("write_files needs a connection when there are files to write")
        gen = str(gens.get(_USER_GEN if kind == "user" else name, "0"))
        entry = entries.get(name) or {}
        current = store / str(entry.get("file") or "-")
        if not _stale(entry, current, kind=kind, gen=gen, sql=sql):
            files[name] = current
            continue
        wait = FILE_WRITE_SPACING * float(entry.get("ms") or 0) / 1000 - age_s(
            str(entry.get("last_run_at") or "")
        )
        if not force and entry.get("ok") and current.exists() and wait > 0:
            next_due = wait if next_due is None else min(next_due, wait)
            files[name] = current
            continue
        entries[name] = _write_file(con, store, name, sql, fmt, kind)
        if entries[name]["ok"]:
            files[name] = store / entries[name]["file"]
        elif current.exists():
            files[name] = current  # readers keep the last good file
            entries[name]["file"] = current.name
        entries[name]["gen"] = gen
        if kind == "user":
            entries[name]["sql"] = sql
        written.append(name)
    dropped: list[str] = []
    if kind == "user":
        users = {e.name for e in config.exports}
        dropped = [n for n, e in entries.items() if e.get("kind") == "user" and n not in users]
        for name in dropped:  # an [[exports]] entry removed from the config
            del entries[name]
    if written or dropped:
        write_json(exports_dir / STATUS_NAME, status)
    return {"written": written, "files": files, "next_due_in_s": next_due}


def _stale(entry: dict[str, Any], current: Path, *, kind: str, gen: str, sql: str) -> bool:
    """Whether the file of status ``entry`` (``current``) is to be written again."""
    return (
        not current.exists()
        or not entry.get("ok")
        or entry.get("kind") != kind
        or entry.get("gen") != gen
        or (kind == "user" and entry.get("sql") != sql)
    )


def _write_file(
    con: duckdb.DuckDBPyConnection, store: Path, name: str, sql: str, fmt: str, kind: str
) -> dict[str, Any]:
    """Write the result of ``sql`` to a new file of export ``name`` in ``store``; the status
    entry of the write (``file`` set when it succeeded; a failure is logged ``export.failed``)."""
    t0 = time.perf_counter()
    dest = store / f"{name}.{secrets.token_hex(6)}.{fmt}"
    try:
        rows = copy_to(con, sql, {}, dest, fmt)
    except (duckdb.Error, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}".strip()
        log.error("export.failed", export=name, error=error)
        return _entry(kind, t0, error=error)
    return {**_entry(kind, t0, rows=rows), "file": dest.name}


def _entry(
    kind: str, t0: float, *, rows: int | None = None, error: str | None = None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "last_run_at": iso_utc(),
        "rows": rows,
        "ms": round((time.perf_counter() - t0) * 1000, 1),
        "ok": error is None,
        "error": error,
    }


def remove_legacy_exports(config: Config) -> None:
    """Files of the layout before generations (``exports/tables/``, ``exports/<name>.parquet``):
    readers of those would read data that is never updated again, so they go."""
    base = Path(config.exports_dir)
    names = [f"{n}.parquet" for n in plugins.summary_names()]
    names += [f"{e.name}.{e.format}" for e in config.exports]
    legacy = [base / n for n in names if (base / n).is_file()]
    if (base / "tables").is_dir():
        legacy.append(base / "tables")
    for path in legacy:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if legacy:
        log.info("export.legacy_removed", paths=[str(p) for p in legacy])
