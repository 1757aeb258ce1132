"""Parquet crafted byte by byte: a footer that declares rows no data page holds."""

from __future__ import annotations

import struct

# ---------------------------------------------------------------------------- crafted Parquet
# A minimal Thrift compact-protocol encoder, enough to write a Parquet footer by hand
# (FileMetaData with one INT64 column). Used to craft files whose footer declares a billion
# rows without any data: the validator must compare the numbers and never read data pages.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


class _Thrift:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.last = [0]

    def _field(self, fid: int, ftype: int) -> None:
        delta = fid - self.last[-1]
        if 0 < delta <= 15:
            self.buf.append((delta << 4) | ftype)
        else:
            self.buf.append(ftype)
            self.buf += _zigzag(fid)
        self.last[-1] = fid

    def i32(self, fid: int, v: int) -> None:
        self._field(fid, 5)
        self.buf += _zigzag(v)

    def i64(self, fid: int, v: int) -> None:
        self._field(fid, 6)
        self.buf += _zigzag(v)

    def string(self, fid: int, s: str) -> None:
        self._field(fid, 8)
        b = s.encode()
        self.buf += _varint(len(b)) + b

    def begin(self, fid: int | None = None) -> None:
        if fid is not None:
            self._field(fid, 12)
        self.last.append(0)

    def end(self) -> None:
        self.buf.append(0)
        self.last.pop()

    def list_header(self, fid: int, etype: int, n: int) -> None:
        self._field(fid, 9)
        assert n < 15
        self.buf.append((n << 4) | etype)


def crafted_parquet(num_rows: int, row_group_rows: int | None) -> bytes:
    """A Parquet file of a few dozen bytes whose footer says ``num_rows`` rows, with one row
    group claiming ``row_group_rows`` rows (or no row group at all when None)."""
    t = _Thrift()
    t.i32(1, 1)  # version
    t.list_header(2, 12, 2)  # schema: root + one leaf
    t.begin()
    t.string(4, "schema")
    t.i32(5, 1)
    t.end()
    t.begin()
    t.i32(1, 2)  # INT64
    t.i32(3, 0)  # REQUIRED
    t.string(4, "x")
    t.end()
    t.i64(3, num_rows)
    if row_group_rows is None:
        t.list_header(4, 12, 0)
    else:
        t.list_header(4, 12, 1)
        t.begin()  # RowGroup
        t.list_header(1, 12, 1)
        t.begin()  # ColumnChunk
        t.i64(2, 4)  # file_offset
        t.begin(3)  # ColumnMetaData
        t.i32(1, 2)
        t.list_header(2, 5, 1)
        t.buf += _zigzag(0)  # PLAIN
        t.list_header(3, 8, 1)
        t.buf += _varint(1) + b"x"
        t.i32(4, 0)  # UNCOMPRESSED
        t.i64(5, row_group_rows)
        t.i64(6, 0)
        t.i64(7, 0)
        t.i64(9, 4)  # data_page_offset
        t.end()
        t.end()
        t.i64(2, 0)  # total_byte_size
        t.i64(3, row_group_rows)
        t.end()
    t.buf.append(0)
    footer = bytes(t.buf)
    return b"PAR1" + footer + struct.pack("<I", len(footer)) + b"PAR1"
