"""SHA-256 of data files, streamed: a finished file hashed in chunks, or a file hashed and counted
while pyarrow writes it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

CHUNK = 1 << 20  #: bytes read at a time


def sha256_file(path: Path) -> str:
    """Hash a file by streaming it (never loads it whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashingFile:
    """A write-only file object for pyarrow that hashes and counts bytes as they are written."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "xb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self.nbytes = 0

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.nbytes += view.nbytes
        return self._fh.write(view)

    def tell(self) -> int:
        return self.nbytes

    def flush(self) -> None:
        if not self._fh.closed:
            self._fh.flush()

    def close(self, *, sync: bool = True) -> None:
        if self._fh.closed:
            return
        try:
            self._fh.flush()
            if sync:
                os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
