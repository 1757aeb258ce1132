"""Another process reading the bus's Iceberg tables the documented ways (docs/scale-out.md).

    python tests/_iceberg_reader.py CATALOG_URI WAREHOUSE

Prints one JSON object: runs_d's row count through pyiceberg -> Arrow -> DuckDB, the trades
table's rows per run through Polars ``scan_iceberg``, and the same join in DuckDB over Arrow.
The AWS_* environment names the object store.
"""

from __future__ import annotations

import json
import os
import sys

import duckdb
import polars as pl
from pyiceberg.catalog import load_catalog


def main() -> None:
    uri, warehouse = sys.argv[1], sys.argv[2]
    catalog = load_catalog(
        "quantbot",
        type="sql",
        uri=uri.replace("postgresql://", "postgresql+psycopg2://"),
        warehouse=warehouse,
        **{
            "s3.endpoint": os.environ["AWS_ENDPOINT_URL"],
            "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "s3.region": os.environ["AWS_REGION"],
        },
    )
    runs = catalog.load_table("quantbot.runs_d").scan().to_arrow()
    trades = catalog.load_table("quantbot.trades")
    per_run = (
        pl.scan_iceberg(trades).group_by("run_id").agg(pl.len().alias("n")).collect().sort("run_id")
    )
    con = duckdb.connect()
    con.register("runs", runs)
    con.register("trades", trades.scan().to_arrow())
    joined = con.execute(
        "SELECT count(*) FROM trades JOIN runs USING (run_id) WHERE runs.status = 'success'"
    ).fetchone()
    counted = con.execute("SELECT count(*) FROM runs").fetchone()
    assert counted is not None  # count(*) always gives a row
    print(
        json.dumps(
            {
                "runs": counted[0],
                "per_run": dict(
                    zip(per_run["run_id"].to_list(), per_run["n"].to_list(), strict=True)
                ),
                "joined": joined[0] if joined else None,
            }
        )
    )


if __name__ == "__main__":
    main()
