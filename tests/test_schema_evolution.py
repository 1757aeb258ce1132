"""Schema evolution (issue #14): ``quantbot-bus schema``, safe widening in the exports, conflicts
flagged.

Three producer versions of one table — v1 ``{a int32, b string}``, v2 ``{a int64, b string, c
double}``, v3 ``{a double, b string}`` — and a fourth whose ``a`` is a string, as real run
directories registered by the real one-shot path (:func:`builders.sync`: scan → catalog →
publication → exports). What a user sees is read from the publication: the CLI (CliRunner), the
views ``exports.*`` through ``quantbot-bus query``'s library call, and the published segment
files with Polars.
"""

# ruff: noqa: S608 - test SQL over names the test itself made

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from builders import make_run, snapshot_query, sync
from click.testing import CliRunner
from structlog.testing import capture_logs

from quantbot_bus.catalog.coltypes import duck_type, widen
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.exports import run_query

BIG = 2**40 + 1  # an int64 that a double holds exactly


def v1(a: int) -> pa.Table:
    return pa.table({"a": pa.array([a, a + 1], pa.int32()), "b": ["x", "y"]})


def v2(a: int) -> pa.Table:
    return pa.table({"a": pa.array([a], pa.int64()), "b": ["z"], "c": [0.5]})


def v3(a: float) -> pa.Table:
    return pa.table({"a": pa.array([a], pa.float64()), "b": ["w"]})


def v4() -> pa.Table:
    return pa.table({"a": pa.array(["oops"], pa.string()), "b": ["q"]})


def add(cfg: Config, run_id: str, table: pa.Table, day: int, hour: int = 0) -> None:
    """A run with artifact table ``t`` (``table``) and ``u`` (3 sample rows)."""
    make_run(
        cfg.root,
        run_id=run_id,
        tables={"t": table, "u": 3},
        created_at=f"2024-05-{day:02d}T{hour:02d}:00:00Z",
    )


def cli(cfg: Config, *args: str) -> str:
    dirs = ["--root", str(cfg.root), "--exports-dir", str(cfg.exports_dir)]
    result = CliRunner().invoke(main, [*args, *dirs, "--state-dir", str(cfg.state_dir)])
    assert result.exit_code == 0, result.output
    return result.output


def rows(cfg: Config, sql: str) -> list[tuple[Any, ...]]:
    return run_query(cfg, sql).rows


def test_three_versions_widen_and_a_conflicting_run_is_flagged(bus: Config) -> None:
    add(bus, "r1", v1(1), 1)
    sync(bus)
    add(bus, "r2", v2(BIG), 2)
    sync(bus)
    add(bus, "r3", v3(4.25), 3)
    sync(bus)
    with capture_logs() as logs:
        add(bus, "r4", v4(), 4)
        add(bus, "r5", v1(7), 5)  # a later compatible run (v1 again) still exports
        sync(bus)

    # The view: the widest compatible types; a column missing in a run is NULL; ints widened
    # to double exactly; the conflicting run's rows are not there (its other table is).
    assert rows(bus, "DESCRIBE SELECT * FROM exports.t") == [
        ("run_id", "VARCHAR", "YES", None, None, None),
        ("a", "DOUBLE", "YES", None, None, None),
        ("b", "VARCHAR", "YES", None, None, None),
        ("c", "DOUBLE", "YES", None, None, None),
    ]
    got = rows(bus, "SELECT run_id, a, b, c FROM exports.t ORDER BY run_id, a")
    assert got == [
        ("r1", 1.0, "x", None),
        ("r1", 2.0, "y", None),
        ("r2", float(BIG), "z", 0.5),
        ("r3", 4.25, "w", None),
        ("r5", 7.0, "x", None),
        ("r5", 8.0, "y", None),
    ]
    assert all(isinstance(r[1], float) for r in got) and int(got[2][1]) == BIG
    assert rows(bus, "SELECT count(*) FROM exports.u WHERE run_id = 'r4'") == [(3,)]

    reason = (
        "run r4: column a is VARCHAR, earlier runs have DOUBLE; its rows are not in exports.t "
        "(write a as DOUBLE, or under another column name, and the run is exported when it "
        "changes)"
    )
    assert rows(
        bus,
        "SELECT table_name, run_id, column_name, type, expected, reason "
        "FROM exports.schema_conflicts",
    ) == [("t", "r4", "a", "VARCHAR", "DOUBLE", reason)]
    events = [e for e in logs if e["event"] == "export.schema_conflict"]
    assert [(e["table"], e["run_id"], e["column"], e["reason"]) for e in events] == [
        ("t", "r4", "a", reason)
    ]

    assert cli(bus, "schema", "t", "--format", "table") == (
        "t: 5 schema version(s), view exports.t\n"
        "version  runs  first_run_id  last_run_id  columns                        changes"
        "                                    flagged\n"
        "-------  ----  ------------  -----------  -----------------------------  "
        "-----------------------------------------  -------\n"
        "1        1     r1            r1           a INTEGER, b VARCHAR\n"
        "2        1     r2            r2           a BIGINT, b VARCHAR, c DOUBLE  "
        "widened a INTEGER->BIGINT; added c DOUBLE\n"
        "3        1     r3            r3           a DOUBLE, b VARCHAR            "
        "widened a BIGINT->DOUBLE; dropped c\n"
        "4        1     r4            r4           a VARCHAR, b VARCHAR           "
        "conflict a VARCHAR (table has DOUBLE)      1\n"
        "5        1     r5            r5           a INTEGER, b VARCHAR           "
        "narrowed a DOUBLE->INTEGER\n"
        f"{reason}\n"
    )
    versions = json.loads(cli(bus, "schema", "t", "--format", "json"))
    assert [v["changes"] for v in versions] == [
        [],
        [
            {"kind": "widened", "column": "a", "from": "INTEGER", "to": "BIGINT", "reason": None},
            {"kind": "added", "column": "c", "from": None, "to": "DOUBLE", "reason": None},
        ],
        [
            {"kind": "widened", "column": "a", "from": "BIGINT", "to": "DOUBLE", "reason": None},
            {"kind": "dropped", "column": "c", "from": "DOUBLE", "to": None, "reason": None},
        ],
        [
            {
                "kind": "conflict",
                "column": "a",
                "from": "DOUBLE",
                "to": "VARCHAR",
                "reason": "run r4: column a is VARCHAR, earlier runs have DOUBLE",
            }
        ],
        [{"kind": "narrowed", "column": "a", "from": "DOUBLE", "to": "INTEGER", "reason": None}],
    ]
    assert versions[3]["flagged"] == [
        {"run_id": "r4", "column": "a", "type": "VARCHAR", "expected": "DOUBLE", "reason": reason}
    ]
    assert [v["flagged"] for i, v in enumerate(versions) if i != 3] == [[]] * 4
    assert versions[1] | {"changes": None} == {
        "version": 2,
        "first_run_id": "r2",
        "last_run_id": "r2",
        "first_created_at": "2024-05-02T00:00:00Z",
        "last_created_at": "2024-05-02T00:00:00Z",
        "runs": 1,
        "columns": [
            {"name": "a", "type": "BIGINT"},
            {"name": "b", "type": "VARCHAR"},
            {"name": "c", "type": "DOUBLE"},
        ],
        "changes": None,
        "flagged": [],
    }
    assert json.loads(cli(bus, "schema", "--format", "json")) == [
        {
            "table": "t",
            "view": "exports.t",
            "runs": 5,
            "versions": 5,
            "first_created_at": "2024-05-01T00:00:00Z",
            "last_created_at": "2024-05-05T00:00:00Z",
            "conflicts": 1,
            "flagged": 1,
        },
        {
            "table": "u",
            "view": "exports.u",
            "runs": 5,
            "versions": 1,
            "first_created_at": "2024-05-01T00:00:00Z",
            "last_created_at": "2024-05-05T00:00:00Z",
            "conflicts": 0,
            "flagged": 0,
        },
    ]

    # File readers: the published segments hold the types of their time (each no narrower
    # than the one before); Polars unions them with the documented diagonal_relaxed concat.
    gen = os.path.realpath(bus.exports_dir / "current")
    files = sorted(glob.glob(f"{gen}/tables/t/*.parquet"))
    frame = pl.concat([pl.scan_parquet(f) for f in files], how="diagonal_relaxed").collect()
    assert frame.schema["a"] == pl.Float64 and frame.schema["c"] == pl.Float64
    assert sorted(frame["run_id"].to_list()) == ["r1", "r1", "r2", "r3", "r5", "r5"]


def test_a_conflict_after_many_batches_and_its_fix(bus: Config) -> None:
    """Runs arrive over many syncs (the table has many segments, widened midway); then a chunk
    holds a conflicting run beside compatible ones: only the conflicting one is left out. Once
    the run is rewritten with numbers it is exported and its flag goes; a deleted flagged run
    takes its flag with it."""
    n = 0
    for batch in range(4):
        for _ in range(3):
            n += 1
            table = v1(n) if batch < 2 else v2(n)  # widened int32 -> int64 in batch 2
            add(bus, f"r{n:02d}", table, 1 + batch, hour=n)
        sync(bus)
    assert len(list((bus.exports_dir / "current" / "tables" / "t").glob("*.parquet"))) == 4
    assert rows(bus, "SELECT count(DISTINCT run_id), max(a) FROM exports.t") == [(12, 12)]
    assert rows(bus, "SELECT column_type FROM (DESCRIBE exports.t) WHERE column_name = 'a'") == [
        ("BIGINT",)
    ]

    add(bus, "r13", v2(13), 10)
    add(bus, "r14", v4(), 11)
    add(bus, "r15", v3(15.5), 12)
    add(bus, "x-str", v4(), 13)  # a second conflicting run
    sync(bus)
    got = rows(bus, "SELECT run_id, a FROM exports.t WHERE run_id >= 'r13' ORDER BY run_id")
    assert got == [("r13", 13.0), ("r15", 15.5)]  # widened to double by r15, in one chunk
    # Each is flagged against the type the table had when it came (in created_at order).
    assert rows(bus, "SELECT run_id, reason FROM exports.schema_conflicts ORDER BY run_id") == [
        (
            r,
            f"run {r}: column a is VARCHAR, earlier runs have {t}; its rows are not in "
            f"exports.t (write a as {t}, or under another column name, and the run is exported "
            "when it changes)",
        )
        for r, t in (("r14", "BIGINT"), ("x-str", "DOUBLE"))
    ]
    overview = json.loads(cli(bus, "schema", "--format", "json"))
    assert [(o["table"], o["versions"], o["conflicts"], o["flagged"]) for o in overview] == [
        ("t", 5, 2, 2),  # v1, v2 (r13 too), v4, v3, v4
        ("u", 1, 0, 0),
    ]

    # The producer fixes r14 (numbers again): its new version is exported, its flag is gone;
    # the other flagged run is deleted: its flag goes with it.
    shutil.rmtree(bus.root / "backtest" / "r14")
    add(bus, "r14", v3(14.0), 11)
    shutil.rmtree(bus.root / "backtest" / "x-str")
    sync(bus)
    assert rows(bus, "SELECT a FROM exports.t WHERE run_id = 'r14'") == [(14.0,)]
    assert rows(bus, "SELECT count(*) FROM exports.schema_conflicts") == [(0,)]
    versions = json.loads(cli(bus, "schema", "t", "--format", "json"))
    assert [(v["first_run_id"], v["runs"], v["flagged"]) for v in versions] == [
        ("r01", 6, []),
        ("r07", 7, []),
        ("r14", 2, []),
    ]


def test_within_one_chunk_created_at_order_decides(bus: Config) -> None:
    """All runs in one sync: the earliest run (by created_at, not run_id) sets the type."""
    add(bus, "a-late", v4(), 9)
    add(bus, "z-early", v1(1), 1)
    add(bus, "m-mid", v3(2.5), 5)
    sync(bus)
    assert rows(bus, "SELECT run_id, a FROM exports.t ORDER BY a") == [
        ("z-early", 1.0),
        ("z-early", 2.0),
        ("m-mid", 2.5),
    ]
    assert rows(bus, "SELECT run_id, type, expected FROM exports.schema_conflicts") == [
        ("a-late", "VARCHAR", "DOUBLE")
    ]
    text = cli(bus, "schema", "t", "--format", "table")
    assert "conflict a VARCHAR (table has DOUBLE)" in text.splitlines()[5]


def test_schema_of_an_unknown_table_exits_5(bus: Config) -> None:
    add(bus, "r1", v1(1), 1)
    sync(bus)
    dirs = ["--root", str(bus.root), "--exports-dir", str(bus.exports_dir)]
    result = CliRunner().invoke(main, ["schema", "nope", *dirs, "--state-dir", str(bus.state_dir)])
    assert result.exit_code == 5
    assert "no live run has an artifact table named 'nope'" in result.output


@pytest.mark.parametrize(
    ("a", "b", "wide"),
    [
        ("int32", "int64", "int64"),
        ("int64", "double", "double"),
        ("int32", "float", "double"),
        ("float", "halffloat", "float"),
        ("uint32", "int8", "int64"),
        ("uint64", "int64", "double"),
        ("uint8", "uint16", "uint16"),
        ("decimal128(10, 2)", "int64", "double"),
        ("null", "string", "string"),
        ("large_string", "string", "string"),
        ("timestamp[ms]", "timestamp[us]", "timestamp[us]"),
        ("string", "double", None),
        ("bool", "int32", None),
        ("date32[day]", "timestamp[us]", None),
        ("list<item: int64>", "int64", None),
        ("timestamp[us, tz=UTC]", "timestamp[us]", None),
        ("timestamp[ns, tz=UTC]", "timestamp[us, tz=UTC]", "timestamp[ns, tz=UTC]"),
        ("timestamp[us, tz=UTC]", "timestamp[us, tz=Europe/Paris]", None),
    ],
)
def test_widening_rules(a: str, b: str, wide: str | None) -> None:
    assert widen(a, b) == wide
    assert widen(b, a) == wide  # symmetric


def test_category_and_zoned_time_columns_export_beside_plain_ones(bus: Config) -> None:
    """End to end: a pandas-category string column and nanosecond zoned times in one run,
    plain strings and microsecond zoned times in another: no conflict, both runs exported."""
    plain = pa.table(
        {
            "caller": pa.array(["a", "b"]),
            "at": pa.array([0, 1], pa.timestamp("us", tz="UTC")),
        }
    )
    cat = pa.table(
        {
            "caller": pa.array(["c", "d"]).dictionary_encode(),
            "at": pa.array([2, 3], pa.timestamp("ns", tz="UTC")),
        }
    )
    add(bus, "p1", plain, 1)
    add(bus, "c2", cat, 2)
    sync(bus)
    assert snapshot_query(bus, "SELECT count(*) FROM exports.schema_conflicts") == [(0,)]
    rows = snapshot_query(bus, "SELECT run_id, caller FROM exports.t ORDER BY caller")
    assert rows == [("p1", "a"), ("p1", "b"), ("c2", "c"), ("c2", "d")]


def test_a_dictionary_column_is_its_values_type() -> None:
    """A pandas category column (dictionary-encoded) is a string column, whatever its index
    width: not a conflict with plain strings."""
    from quantbot_bus.catalog.coltypes import parse_schema

    cat = pa.schema([("caller", pa.dictionary(pa.int32(), pa.string()))])
    wide = pa.schema([("caller", pa.dictionary(pa.int8(), pa.large_string()))])
    text = json.dumps([{"name": f.name, "type": str(f.type)} for f in cat])
    assert parse_schema(text) == (("caller", "string"),)
    other = parse_schema(json.dumps([{"name": "caller", "type": str(wide.field(0).type)}]))
    assert widen(parse_schema(text)[0][1], other[0][1]) == "string"


def test_duckdb_names_match_what_duckdb_reads(tmp_path: Path) -> None:
    import duckdb
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "i8": pa.array([1], pa.int8()),
            "u32": pa.array([1], pa.uint32()),
            "i64": pa.array([1], pa.int64()),
            "f": pa.array([1.0], pa.float32()),
            "d": pa.array([1.0], pa.float64()),
            "s": pa.array(["x"], pa.string()),
            "ts": pa.array([0], pa.timestamp("ms")),
            "ns": pa.array([0], pa.timestamp("ns")),
            "dec": pa.array([1], pa.decimal128(10, 2)),
        }
    )
    pq.write_table(table, tmp_path / "f.parquet")
    schema = pq.read_metadata(tmp_path / "f.parquet").schema.to_arrow_schema()
    con = duckdb.connect()
    got = con.execute(f"DESCRIBE SELECT * FROM '{tmp_path / 'f.parquet'}'").fetchall()
    con.close()
    assert [duck_type(str(f.type)) for f in schema] == [r[1] for r in got]
