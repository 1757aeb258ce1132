"""Catalogs (a working one, ``sync``, the publication) and what they hold; the validator's answer
checked; the in-process CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from quantbot_bus import exports, ingest, pipeline
from quantbot_bus.catalog import Catalog, open_reader
from quantbot_bus.config import Config
from quantbot_bus.contract import ArtifactInfo, Incomplete, Invalid, RunInfo
from quantbot_bus.publication import Publication, Published

# ---------------------------------------------------------------------------- the validator's answer


def assert_invalid(result: Any, *needles: str) -> Invalid:
    """``result`` is Invalid and its reason holds every needle (and is printable)."""
    assert isinstance(result, Invalid), result
    for needle in needles:
        assert needle in result.reason, f"{needle!r} not in {result.reason!r}"
    result.reason.encode("utf-8")  # always printable/loggable
    return result


def assert_incomplete(result: Any, *needles: str) -> Incomplete:
    """``result`` is Incomplete and its reason holds every needle."""
    assert isinstance(result, Incomplete), result
    for needle in needles:
        assert needle in result.reason, f"{needle!r} not in {result.reason!r}"
    return result


# ---------------------------------------------------------------------------- catalogs


def make_catalog(config: Config) -> None:
    """A real working catalog holding the runs under the root, and its publication (no exports
    refresh: see :func:`sync` for the whole one-shot path)."""
    with Catalog.open(config.catalog_path) as cat:
        cat.apply_batch(ingest.full_scan(config, cat).batch)
        publish_catalog(cat, config.exports_dir)


def sync(config: Config) -> dict[str, Any]:
    """``quantbot-bus sync`` in process (scan, catalog, publication, exports); returns the
    export status it wrote."""
    pipeline.sync(config)
    status: dict[str, Any] = json.loads((config.exports_dir / exports.STATUS_NAME).read_text())
    return status


def publish_catalog(catalog: Catalog, exports_dir: Path) -> Published:
    """Publish what ``catalog`` holds to ``exports_dir`` (what the Bus does after each batch)."""
    publication, cur = Publication(exports_dir), catalog.cursor()
    try:
        published = publication.publish(cur, catalog_id=catalog.catalog_id(), force=True)
    finally:
        cur.close()
        publication.close()
    assert published is not None
    return published


def snapshot_query(config: Config, sql: str, params: list[Any] | None = None) -> list[tuple]:
    """Query the reader-side snapshot on a fresh read-only connection; [] if not published."""
    if not config.snapshot_path.exists():
        return []
    con = open_reader(config.snapshot_path)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def live_run_ids(config: Config) -> set[str]:
    """run_ids of the live (not deleted) runs in the snapshot."""
    rows = snapshot_query(config, "SELECT run_id FROM catalog.runs_d WHERE deleted_at IS NULL")
    return {r[0] for r in rows}


def live_count(config: Config) -> int:
    """How many live runs the snapshot holds (0 before the first publication)."""
    rows = snapshot_query(config, "SELECT count(*) FROM catalog.runs_d WHERE deleted_at IS NULL")
    return int(rows[0][0]) if rows else 0


def open_rejections(config: Config) -> dict[str, str]:
    """run_dir -> reason of every open rejection in the snapshot."""
    rows = snapshot_query(
        config, "SELECT run_dir, reason FROM catalog.rejections_f WHERE resolved_at IS NULL"
    )
    return dict(rows)


def cli(bus: Config, *args: str, root_flag: str = "--root") -> Result:
    """``quantbot-bus ARGS[0] <the bus's directories> ARGS[1:]`` in process (``CliRunner``)."""
    from quantbot_bus.cli import main

    dirs = [root_flag, str(bus.root), "--exports-dir", str(bus.exports_dir)]
    dirs += ["--state-dir", str(bus.state_dir)]
    return CliRunner().invoke(main, [args[0], *dirs, *args[1:]], catch_exceptions=False)


# ---------------------------------------------------------------------------- catalog rows

RUN_INFO_SCHEMA = json.dumps([{"name": "x", "type": "int64", "nullable": True}])


def run_info(
    root: Path,
    run_id: str,
    *,
    run_type: str = "backtest",
    fingerprint: str = "fp1",
    names: tuple[str, ...] = ("results",),
    run_dir: Path | None = None,
    created_at: str = "2024-05-01T12:00:00Z",
    status: str = "success",
    params: dict[str, Any] | None = None,
    metadata_json: str | None = None,
) -> RunInfo:
    """A :class:`RunInfo` as the validator would return it, built directly (no files behind it:
    the catalog does not read the disk); one artifact per name in ``names``."""
    run_dir = run_dir if run_dir is not None else root / run_type / run_id
    artifacts = tuple(
        ArtifactInfo(
            name=name,
            file=f"{name}.parquet",
            path=run_dir / f"{name}.parquet",
            format="parquet",
            rows=10 + i,
            bytes=1000 + i,
            sha256="ab" * 32,
            arrow_schema=RUN_INFO_SCHEMA,
        )
        for i, name in enumerate(names)
    )
    return RunInfo(
        run_id=run_id,
        run_type=run_type,
        producer="tests",
        producer_version="1.0",
        status=status,
        created_at=created_at,
        started_at=created_at,
        finished_at=created_at,
        params=params if params is not None else {"seed": 1},
        metrics={"sharpe": 1.5},
        git_commit="abc",
        git_branch="main",
        git_dirty=False,
        host="h",
        error=None,
        artifacts=artifacts,
        run_dir=run_dir,
        metadata_json=metadata_json
        if metadata_json is not None
        else json.dumps({"run_id": run_id}),
        metadata_mtime_ns=time.time_ns(),
        fingerprint=fingerprint,
    )


def catalog_rows(c: Catalog, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` on a working catalog's own connection."""
    return c.con.execute(sql, params or []).fetchall()
