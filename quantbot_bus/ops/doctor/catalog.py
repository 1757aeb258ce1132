"""Doctor checks of the databases: the installed duckdb can open the working catalog, the
publication readers open (``exports/bus.duckdb``) answers a query, and the working catalog's
schema version is one this quantbot-bus understands (read-only, never while the daemon holds it)."""

from __future__ import annotations

from pathlib import Path

from ...config import Config
from .base import FAIL, OK, WARN, Check, first_line

MIN_DUCKDB = (2, 0)


def check_duckdb(version: str | None = None) -> Check:
    """duckdb >= 2.0 for the daemon and sync: the working catalog is a DuckDB 2 file (readers of
    the publication need only DuckDB >= 1.2)."""
    if version is None:
        import duckdb

        version = duckdb.__version__
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) >= MIN_DUCKDB:
        return Check("duckdb", OK, f"duckdb {version}")
    return Check(
        "duckdb",
        FAIL,
        f"duckdb {version} is older than 2.0; the daemon and sync need it for the working "
        "catalog (readers of exports/bus.duckdb need only DuckDB >= 1.2)",
        "pip install --upgrade 'duckdb>=2.0' in the daemon's environment",
    )


def _schema_version(path: Path) -> int:
    """``max(version)`` of ``catalog.schema_version`` in the DuckDB file, opened read-only."""
    import duckdb

    from ...catalog import DB_ALIAS

    con = duckdb.connect()
    try:
        con.execute(f"ATTACH ? AS {DB_ALIAS} (READ_ONLY)", [str(path)])
        try:
            row = con.execute(
                f"SELECT max(version) FROM {DB_ALIAS}.catalog.schema_version"  # noqa: S608
            ).fetchone()
        except duckdb.CatalogException:
            raise ValueError(
                "it is not a quantbot-bus catalog (no catalog.schema_version)"
            ) from None
    finally:
        con.close()
    return int(row[0]) if row and row[0] is not None else 0


def _version_check(name: str, path: Path, what: str) -> Check:
    import duckdb

    from ...catalog import SCHEMA_VERSION

    try:
        version = _schema_version(path)
    except (duckdb.Error, ValueError) as exc:
        text = first_line(exc)
        if "could not set lock" in text.lower() or "conflicting lock" in text.lower():
            return Check(
                name,
                WARN,
                f"{what} {path} is busy (another process holds it): {text}",
                "run doctor again when `quantbot-bus sync` has finished",
            )
        return Check(
            name,
            FAIL,
            f"{what} {path} cannot be read: {text}",
            "stop the daemon, move the file aside and run `quantbot-bus rebuild`"
            if name == "catalog"
            else "the daemon or `quantbot-bus sync` rewrites it on its next batch; if this "
            "persists, run `quantbot-bus sync` (or restart the daemon) and check its log",
        )
    if version > SCHEMA_VERSION:
        return Check(
            name,
            FAIL,
            f"{what} {path} has schema version {version}, newer than this quantbot-bus "
            f"understands ({SCHEMA_VERSION})",
            "upgrade quantbot-bus in this environment (pip install --upgrade quantbot-bus)",
        )
    if version < SCHEMA_VERSION:
        return Check(
            name,
            WARN,
            f"{what} {path} has schema version {version}; this quantbot-bus uses {SCHEMA_VERSION}",
            "restart the daemon (or run `quantbot-bus sync`): it migrates the catalog and "
            "publishes a new snapshot",
        )
    return Check(name, OK, f"{what} {path} opens, schema version {version}")


def check_snapshot(config: Config, daemon_expected: bool) -> Check:
    """The publication readers open (``exports/bus.duckdb``) opens and answers a query."""
    import duckdb

    from ...catalog import open_reader
    from ...errors import BusError
    from ...publication import current_generation

    path = config.snapshot_path
    if not path.exists():
        return Check(
            "snapshot",
            FAIL if daemon_expected else WARN,
            f"no catalog snapshot at {path} yet: readers have nothing to query",
            "start the daemon (systemctl start quantbot-bus) or run `quantbot-bus sync`",
        )
    try:
        con = open_reader(path)
        try:
            row = con.execute("SELECT count(*) FROM catalog.runs_d").fetchone()
        finally:
            con.close()
        gen = current_generation(config.exports_dir).name
    except (BusError, duckdb.Error) as exc:
        return Check(
            "snapshot",
            FAIL,
            f"the publication {path} cannot be read: {first_line(exc)}",
            "the daemon or `quantbot-bus sync` publishes a new one with its next batch; if this "
            "persists, run `quantbot-bus sync` (or restart the daemon) and check its log",
        )
    runs = row[0] if row else 0
    return Check("snapshot", OK, f"publication {gen} ({path}) opens: {runs} runs")


def check_working_catalog(config: Config, holder: int | None) -> Check:
    path = config.catalog_path
    if holder is not None:
        return Check(
            "catalog",
            OK,
            f"the daemon (pid {holder}) holds {path}; not opened (the publication check covers it)",
        )
    if not path.exists():
        return Check(
            "catalog",
            OK,
            f"no working catalog at {path} yet: the daemon or `quantbot-bus sync` creates it",
        )
    return _version_check("catalog", path, "working catalog")
