"""The checks of a scale-out bus (``catalog = "iceberg"``): the object store and the PostgreSQL
catalog answer, with the settings the daemon uses, and the running daemon's upkeep is not stuck
(docs/scale-out.md)."""

from __future__ import annotations

import datetime as dt

from ...config import Config
from ...daemon.status import StatusMissingError, read_status
from ...objectstore.location import S3Settings
from ...timeutil import age_s
from .base import FAIL, OK, WARN, Check


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"


def check_object_store(config: Config) -> Check:
    """The bucket of the ``s3://`` root can be listed with the AWS_* settings."""
    loc = config.s3_root
    assert loc is not None
    settings = S3Settings.from_env()
    try:
        settings.client(timeout_s=5, retries=1).list_objects_v2(
            Bucket=loc.bucket, Prefix=loc.key_prefix(), MaxKeys=1
        )
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        return Check(
            "object_store",
            FAIL,
            f"cannot list {loc.url} at {settings.endpoint_url or 'AWS'}: {_why(exc)}",
            "check AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION "
            "(for the service: quantbot-bus.env beside the config) and that the bucket exists",
        )
    return Check("object_store", OK, f"{loc.url} can be listed")


def check_iceberg_catalog(config: Config) -> Check:
    """The SQL catalog on PostgreSQL answers and holds the bus's tables."""
    from ...iceberg.tables import NAMESPACE, open_catalog

    try:
        catalog = open_catalog(
            config.catalog_uri, config.warehouse, S3Settings.from_env().pyiceberg_properties()
        )
        tables = sorted(t[-1] for t in catalog.list_tables(NAMESPACE))
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        if type(exc).__name__ == "NoSuchNamespaceError":
            return Check(
                "iceberg_catalog",
                WARN,
                f"{config.catalog_uri} answers but holds no quantbot tables yet",
                "start the daemon or run `quantbot-bus sync` to register the first runs",
            )
        return Check(
            "iceberg_catalog",
            FAIL,
            f"cannot read the Iceberg catalog at {config.catalog_uri}: {_why(exc)}",
            "check that PostgreSQL runs, that catalog_uri names its database and that the user "
            "may connect (pg_hba.conf)",
        )
    return Check("iceberg_catalog", OK, f"{len(tables)} tables: {', '.join(tables)}")


#: An upkeep round running longer than this is reported as hung (a round takes minutes: a
#: compaction reads and rewrites at most 64 MiB).
UPKEEP_HUNG_S = 2 * 3600.0


def check_upkeep(
    config: Config, now: dt.datetime | None = None, hung_after_s: float = UPKEEP_HUNG_S
) -> Check:
    """The running daemon's upkeep thread (compaction, snapshot expiry, orphan cleanup): its last
    round went through, and no round has run for longer than ``hung_after_s``."""
    try:
        data = read_status(config.status_path, now=now)
    except StatusMissingError as exc:
        return Check("upkeep", OK, f"not checked: {exc}")
    if data.get("state") not in ("running", "degraded"):
        return Check(
            "upkeep", OK, f"not checked: the daemon's status is {data.get('state')} (see status)"
        )
    since, last, error = data.get("upkeep_since"), data.get("upkeep_at"), data.get("upkeep_error")
    running_s = age_s(since, now) if isinstance(since, str) else 0.0
    journal = "journalctl -u quantbot-bus -n 100 (add --user for a user service)"
    if running_s > hung_after_s:
        took = f"{running_s / 3600:.1f} h" if running_s >= 3600 else f"{running_s:.0f} s"
        return Check(
            "upkeep",
            WARN,
            f"an upkeep round has run for {took} (since {since}): it is hung; "
            "until a round ends, small files and snapshots pile up (registration goes on)",
            "restart the daemon (systemctl restart quantbot-bus): a round cut short commits "
            f"nothing, and the files it wrote are removed by a later round; see {journal}",
        )
    if error:
        return Check(
            "upkeep",
            WARN,
            f"the last upkeep round failed at {last}: {error}; it is tried again every "
            "5 minutes (registration goes on)",
            f"bring back what the error names (PostgreSQL, the object store); see {journal}",
        )
    if last is None:
        return Check(
            "upkeep",
            OK,
            "no upkeep round has ended yet (the first begins a minute after the first poll)",
        )
    return Check("upkeep", OK, f"last upkeep round ended at {last}")
