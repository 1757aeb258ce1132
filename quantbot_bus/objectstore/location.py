"""Where runs live in object storage: an ``s3://BUCKET/PREFIX`` root and the clients for it.

The endpoint and credentials come from the standard environment variables, so every S3 tool
on the host agrees with the bus:

=========================  =============================================================
``AWS_ENDPOINT_URL``       the S3-compatible server (unset: AWS itself)
``AWS_ACCESS_KEY_ID``      access key
``AWS_SECRET_ACCESS_KEY``  secret key
``AWS_REGION``             region (``AWS_DEFAULT_REGION`` as a fallback; default us-east-1)
=========================  =============================================================
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..errors import ConfigError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


#: Error codes S3-compatible servers answer for a key that does not exist.
NOT_FOUND = ("404", "NoSuchKey", "NotFound")


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for any other exception)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def is_s3_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith("s3://")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str, field: str = "root") -> S3Location:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(
                f"config field {field!r} must look like s3://BUCKET/PREFIX, got {url!r}"
            )
        if not _BUCKET.fullmatch(parsed.netloc):
            raise ConfigError(
                f"config field {field!r}: {parsed.netloc!r} is not a valid bucket name "
                "(3-63 lower-case letters, digits, dots and hyphens)"
            )
        prefix = parsed.path.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ConfigError(
                f"config field {field!r}: the prefix {prefix!r} has an empty or dot part"
            )
        return cls(parsed.netloc, prefix)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` below the prefix."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def key_prefix(self) -> str:
        """The prefix every key below this location starts with ('' or 'PREFIX/')."""
        return f"{self.prefix}/" if self.prefix else ""

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@dataclass(frozen=True)
class S3Settings:
    """Endpoint and credentials, read from the AWS_* environment variables."""

    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None
    region: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if env is None else env
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    def client(self, *, timeout_s: float = 10.0, retries: int = 2, connections: int = 32) -> Any:
        """A boto3 S3 client with short timeouts: a slow or dead server makes a call fail
        soon (the daemon retries with its own backoff) instead of hanging a thread. It keeps
        up to ``connections`` connections open (boto3 keeps 10: more threads than that would
        open a new connection for most requests and throw it away after)."""
        from botocore.config import Config as BotoConfig

        with _SESSION_LOCK:  # creating clients from one session is not thread-safe
            return _session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                region_name=self.region,
                config=BotoConfig(
                    connect_timeout=timeout_s,
                    read_timeout=timeout_s,
                    retries={"max_attempts": retries, "mode": "standard"},
                    s3={"addressing_style": "path"},
                    max_pool_connections=connections,
                ),
            )

    def object_store(self, bucket: str, *, timeout_s: float = 10.0, retries: int = 2) -> Any:
        """An obstore ``S3Store`` of ``bucket`` with the same settings and short timeouts
        (:mod:`quantbot_bus.objectstore.reads` makes the validation's GETs with it)."""
        from datetime import timedelta

        from obstore.store import S3Store

        if TYPE_CHECKING:
            from obstore.store import ClientConfig

        options: ClientConfig = {
            "timeout": f"{timeout_s:g}s",
            "connect_timeout": f"{timeout_s:g}s",
            "pool_max_idle_per_host": "32",
            "allow_http": (self.endpoint_url or "").startswith("http://"),
        }
        return S3Store(
            bucket,
            endpoint=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            virtual_hosted_style_request=False,
            client_options=options,
            retry_config={
                "max_retries": retries,
                "retry_timeout": timedelta(seconds=timeout_s),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )

    def arrow_filesystem(self) -> Any:
        """A pyarrow S3 filesystem with the same settings (paths are ``bucket/key``)."""
        from pyarrow import fs as pafs

        scheme = "http" if (self.endpoint_url or "").startswith("http://") else "https"
        return pafs.S3FileSystem(
            endpoint_override=self.endpoint_url,
            access_key=self.access_key_id,
            secret_key=self.secret_access_key,
            region=self.region,
            scheme=scheme,
            connect_timeout=10,
            request_timeout=30,
        )

    def pyiceberg_properties(self) -> dict[str, str]:
        """The same settings as pyiceberg FileIO properties."""
        props = {"s3.region": self.region}
        if self.endpoint_url:
            props["s3.endpoint"] = self.endpoint_url
        if self.access_key_id:
            props["s3.access-key-id"] = self.access_key_id
        if self.secret_access_key:
            props["s3.secret-access-key"] = self.secret_access_key
        return props


def parse_timestamp(value: Any) -> dt.datetime:
    """A timestamp of an S3 response as botocore gives it (a timezone-aware datetime), parsed
    with ``datetime.fromisoformat`` when it is ISO 8601 with a zone (every ``LastModified``
    of a listing): botocore's own parser (dateutil) cost more than the rest of a listing
    page's parsing. Anything else goes to botocore's parser."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    from botocore.utils import parse_timestamp as botocore_parse

    return botocore_parse(value)


_SESSION_LOCK = threading.Lock()
_SESSIONS: list[Any] = []


def _session() -> Any:
    """The boto3 session of :meth:`S3Settings.client` (made once): botocore's, with
    :func:`parse_timestamp` as its timestamp parser."""
    if not _SESSIONS:
        import boto3
        import botocore.session

        core = botocore.session.get_session()
        parsers = core.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=parse_timestamp)
        _SESSIONS.append(boto3.session.Session(botocore_session=core))
    return _SESSIONS[0]


#: S3 DeleteObjects takes at most this many keys per request.
DELETE_CHUNK = 1000


def delete_objects(client: Any, bucket: str, keys: list[str]) -> int:
    """Delete ``keys`` from ``bucket`` (DeleteObjects, :data:`DELETE_CHUNK` at a time); returns
    how many went. Keys the store refuses are logged (``objectstore.delete_failed``)."""
    import structlog

    deleted = 0
    for i in range(0, len(keys), DELETE_CHUNK):
        chunk = keys[i : i + DELETE_CHUNK]
        resp = client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )
        errors = resp.get("Errors", [])
        for err in errors[:5]:
            structlog.get_logger("quantbot_bus.objectstore").warning(
                "objectstore.delete_failed", key=err.get("Key"), error=err.get("Code")
            )
        deleted += len(chunk) - len(errors)
    return deleted
