"""The seed layout on the producer side: where :class:`~quantbot_bus.writer.RunWriter` puts a run
written with ``layout="seed"`` and how it finishes it.

A seed run is ``<root>/<YYYY-MM>/run_id=<run_id>/`` (the UTC month the writer was created; the
run_id a UUID unless given), its tables ``<folder>/<name>.parquet`` in the folders of
:data:`~quantbot_bus.contract.layout.SEED_FOLDERS` (an artifact name is that path without the
extension: ``truth/paths``; a name without a folder goes to ``results/``). Finishing writes, in
this order: the Parquet files (already durable), ``logs/stdout.txt`` and ``logs/stderr.txt``,
``run.json``, then ``_SUCCESS`` (an ISO timestamp), each atomically. A failed run gets no
``_SUCCESS``: its run.json (status ``failed``) is then the last file, with the logs already in
place, so the bus never sees a failed run without its stderr.
"""

from __future__ import annotations

import re
import socket
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contract.layout import (
    LAYOUTS,
    RUN_JSON,
    SEED,
    SEED_FOLDERS,
    SEED_PREFIX,
    STDERR_FILE,
    STDOUT_FILE,
    SUCCESS_NAME,
)
from .errors import ContractError
from .fsutil import fsync_dir, write_atomic
from .timeutil import iso_utc, utc_now

if TYPE_CHECKING:
    import datetime as dt

    from .writer import RunWriter

#: The folder a table name without one goes to.
DEFAULT_FOLDER = "results"
#: ``<folder>/<name>``: one of the seed folders, then a table-like name.
SEED_NAME_RE = re.compile(
    rf"^({'|'.join(SEED_FOLDERS)})/[A-Za-z_][A-Za-z0-9_]{{0,63}}$"  # noqa: S608 - not SQL
)
#: run.json's schema_version as this writer writes it.
MANIFEST_VERSION = {"manifest": "1", "artifacts": "1"}


def check_layout(layout: Any) -> str:
    """``layout`` if :class:`RunWriter` can write it."""
    if layout not in LAYOUTS:
        raise ContractError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return str(layout)


def run_dir(root: Path, run_type: str, run_id: str, created: dt.datetime, layout: str) -> Path:
    """A run's directory: ``root/run_type/run_id``; in the seed layout
    ``root/YYYY-MM/run_id=<run_id>`` for a run created at ``created`` (UTC)."""
    if layout == SEED:
        return root / f"{created:%Y-%m}" / f"{SEED_PREFIX}{run_id}"
    return root / run_type / run_id


def qualify(name: Any) -> Any:
    """A seed artifact name: ``name`` as given when it has a folder, else ``results/<name>``
    (anything not a string is returned for the caller's check to refuse)."""
    if isinstance(name, str) and "/" not in name:
        return f"{DEFAULT_FOLDER}/{name}"
    return name


def check_name(name: Any) -> None:
    """Refuse a seed artifact name that is not ``<folder>/<name>``."""
    if not isinstance(name, str) or not SEED_NAME_RE.fullmatch(name):
        raise ContractError(
            f"artifact name {name!r} is not valid for the seed layout: write "
            f"'<folder>/<name>' with folder one of {', '.join(SEED_FOLDERS)} and name a letter "
            "or '_', then letters, digits or '_' (at most 64 characters), e.g. 'truth/paths'"
        )


def _artifacts(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """run.json's ``artifacts``: ``{type: {rows, path}}``, the type the table's name (its
    folder-qualified name if two folders share it)."""
    leaves = [e["name"].rsplit("/", 1)[-1] for e in entries]
    out: dict[str, dict[str, Any]] = {}
    for entry, leaf in zip(entries, leaves, strict=True):
        key = leaf if leaves.count(leaf) == 1 else entry["name"]
        out[key] = {"rows": entry["rows"], "path": entry["file"]}
    return out


def manifest(w: RunWriter, status: str, finished: dt.datetime) -> dict[str, Any]:
    """The run.json document of ``w`` (the seed fields, plus ``producer``, ``metrics`` and
    ``host``, which the bus reads and other readers ignore)."""
    started = w.started or w.created
    git = w.git or {}
    return {
        "run_id": w.run_id,
        "run_type": w.run_type,
        "status": "completed" if status == "success" else "failed",
        "created_at": iso_utc(w.created),
        "started_at": iso_utc(started),
        "completed_at": iso_utc(finished),
        "git_commit": git.get("commit"),
        "git_branch": git.get("branch"),
        "git_dirty": git.get("dirty"),
        "parameters": w.params,
        "schema_version": MANIFEST_VERSION,
        "artifacts": _artifacts(w.artifacts),
        "timing": {"total": round((finished - started).total_seconds() * 1000, 3)},
        "logs": {"stdout": STDOUT_FILE, "stderr": STDERR_FILE},
        "producer": {"name": w.producer[0], "version": w.producer[1]},
        "metrics": w.metrics,
        "host": socket.gethostname(),
    }


def finish(w: RunWriter, status: str, error: str | None, exc: BaseException | None) -> None:
    """Write the logs, run.json and (a successful run) ``_SUCCESS``, in that order."""
    import json

    finished = utc_now()
    for folder in {Path(a["file"]).parent for a in w.artifacts}:
        fsync_dir(w.run_dir / folder)  # the data files' renames are durable first
    logs = w.run_dir / "logs"
    logs.mkdir(exist_ok=True)
    rows = sum(a["rows"] for a in w.artifacts)
    stdout = f"run {w.run_id} {status}: {len(w.artifacts)} artifacts, {rows} rows\n"
    stderr = ""
    if exc is not None:
        stderr = "".join(traceback.format_exception(exc))
    elif error:
        stderr = error + "\n"
    write_atomic(w.run_dir / STDOUT_FILE, stdout)
    write_atomic(w.run_dir / STDERR_FILE, stderr)
    doc = manifest(w, status, finished)
    write_atomic(w.run_dir / RUN_JSON, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    if status == "success":
        write_atomic(w.run_dir / SUCCESS_NAME, iso_utc(utc_now()) + "\n")
    fsync_dir(w.run_dir.parent)
