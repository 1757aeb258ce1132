"""The checks of a scale-out bus (``catalog = "iceberg"``): the object store and the PostgreSQL
catalog answer, with the settings the daemon uses (docs/scale-out.md)."""

from __future__ import annotations

from ...config import Config
from ...objectstore.location import S3Settings
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
