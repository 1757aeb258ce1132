"""What a producer may hand :meth:`RunWriter.write_table <quantbot_bus.writer.RunWriter.write_table>`:
a pyarrow Table, RecordBatch or RecordBatchReader, a Polars DataFrame, or any object with
``__arrow_c_stream__`` (pandas via pyarrow, DuckDB relations, ...) — as one Arrow stream."""

from __future__ import annotations

import sys
from typing import Any

import pyarrow as pa


def as_stream(data: Any) -> pa.RecordBatchReader:
    """A pyarrow RecordBatchReader over a Table, a RecordBatch, a reader or an Arrow stream."""
    if isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, pa.Table):
        return data.to_reader()
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatchReader.from_batches(data.schema, [data])
    if hasattr(data, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(data)
    raise TypeError(
        "write_table() takes a pyarrow Table/RecordBatch/RecordBatchReader, a polars DataFrame "
        f"or any object with __arrow_c_stream__; got {type(data).__module__}.{type(data).__qualname__}"
    )


def is_polars_frame(data: Any) -> bool:
    polars = sys.modules.get("polars")  # if polars was never imported, data cannot be a frame
    return polars is not None and isinstance(data, polars.DataFrame)
