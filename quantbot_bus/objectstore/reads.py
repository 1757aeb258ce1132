"""Ranged reads (and the few whole-object GETs and PUTs of rewritten files) of objects in one
bucket, through obstore (Rust's ``object_store``).

Validation makes one to three small GETs per run file; through botocore each costs about
1.5 ms of Python CPU under the GIL, which capped a process at a few hundred requests per
second whatever the server could do. obstore sends them from Rust without the GIL (about
0.2 ms of Python per request, measured in the same run: bench/README.md), so the validation
threads overlap for real. The same holds for PUTs: pyarrow's S3 filesystem (the AWS C++ SDK)
spent more CPU per small PUT than the rest of a rewrite.

Errors: a missing key is ``None`` (or :class:`FileNotFoundError` from :meth:`ObjectReads.range`);
anything else (the store down, a 5xx, a timeout after the retries) is raised as obstore's
exception: it says nothing about the run, and the caller retries the poll.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .location import S3Settings


@dataclass(frozen=True)
class Tail:
    """The last bytes of an object (all of it when small) and the object's size."""

    data: bytes
    size: int

    @property
    def start(self) -> int:
        """Where :attr:`data` starts in the object."""
        return self.size - len(self.data)


class ObjectReads:
    """GETs of objects of one bucket; ``store`` is an ``obstore.store.S3Store`` (made by
    :meth:`quantbot_bus.objectstore.location.S3Settings.object_store`). With the bucket's name
    and ``settings`` it also lists a prefix (:meth:`list_prefix`). Thread-safe."""

    def __init__(
        self, store: Any, *, bucket: str | None = None, settings: S3Settings | None = None
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.settings = settings
        self._client: Any = None
        self._client_lock = threading.Lock()

    def list_prefix(self, prefix: str) -> list[dict[str, Any]] | None:
        """Every object below ``prefix`` as ListObjectsV2 gives them (``Key``, ``Size``,
        ``ETag``, ``LastModified``), in key order; None when this reader was made without the
        bucket's name and settings. Through botocore, as the bus's other listings: a key of
        any shape reaches the caller as it is."""
        if self.bucket is None or self.settings is None:
            return None
        with self._client_lock:
            if self._client is None:
                self._client = self.settings.client()
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        out: list[dict[str, Any]] = []
        while True:
            page = self._client.list_objects_v2(**kwargs)
            out.extend(page.get("Contents", []))
            if not page.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def head_bytes(self, key: str, limit: int) -> tuple[bytes, str, float | None] | None:
        """The object's first ``limit`` + 1 bytes at most (a longer object is cut there, so
        the caller sees it is too long), its ETag without quotes and its LastModified (POSIX
        seconds); None when it does not exist."""
        import obstore

        try:
            got = obstore.get(self.store, key, options={"range": (0, limit + 1)})
            data = bytes(got.bytes())
        except FileNotFoundError:
            return None
        except Exception:
            head = self._head(key)
            if head is not None and int(head["size"]) == 0:  # some servers refuse any range
                return b"", "", _seconds(head)  # of an empty object
            raise
        return data, str(got.meta.get("e_tag") or "").strip('"'), _seconds(got.meta)

    def tail(self, key: str, length: int) -> Tail | None:
        """The object's last ``length`` bytes (the whole object when shorter) and its size,
        from one GET; None when it does not exist."""
        import obstore

        try:
            got = obstore.get(self.store, key, options={"range": {"suffix": length}})
            return Tail(bytes(got.bytes()), int(got.meta["size"]))
        except FileNotFoundError:
            return None
        except Exception:
            # an empty object has no last bytes: servers answer 416, or the whole (empty)
            # object where a part was asked for; one HEAD tells which
            if self._size(key) == 0:
                return Tail(b"", 0)
            raise

    def range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` (inclusive) to ``end`` (exclusive) of the object."""
        import obstore

        return bytes(obstore.get_range(self.store, key, start=start, end=end))

    def get(self, key: str) -> bytes:
        """The whole object (:class:`FileNotFoundError` when it does not exist)."""
        import obstore

        return bytes(obstore.get(self.store, key).bytes())

    def put(self, key: str, body: bytes) -> None:
        """Write ``body`` as the object ``key`` in one PUT (atomic: readers see all or none)."""
        import obstore

        obstore.put(self.store, key, body)

    def _size(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else int(head["size"])

    def _head(self, key: str) -> Any:
        """The object's metadata (obstore's ``ObjectMeta``), None when it does not exist."""
        import obstore

        try:
            return obstore.head(self.store, key)
        except FileNotFoundError:
            return None


def _seconds(meta: Any) -> float | None:
    """The LastModified of obstore's object metadata as POSIX seconds."""
    modified = meta.get("last_modified")
    return modified.timestamp() if isinstance(modified, dt.datetime) else None


class Buckets:
    """One :class:`ObjectReads` per bucket, made on first use with the same settings (the
    warehouse may be in another bucket than the root). Thread-safe."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._by_bucket: dict[str, ObjectReads] = {}
        self._lock = threading.Lock()

    def of(self, bucket: str) -> ObjectReads:
        with self._lock:
            if bucket not in self._by_bucket:
                self._by_bucket[bucket] = ObjectReads(
                    self.settings.object_store(bucket), bucket=bucket, settings=self.settings
                )
            return self._by_bucket[bucket]

    def at(self, uri: str) -> tuple[ObjectReads, str]:
        """The bucket's reads and the key of an ``s3://BUCKET/KEY`` URI."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return self.of(bucket), key
