"""The scale-out daemon's local ledger (a real SQLite file): what it remembers across restarts,
how a ledger kept in DuckDB by an earlier version is taken over, and that a batch's lookups cost
in proportion to the batch, not to how many runs the ledger holds."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import duckdb
from structlog.testing import capture_logs

from quantbot_bus.iceberg.ledger import LEDGER_NAME, LEGACY_NAME, Ledger


def test_keys_rejections_and_values_survive_a_reopen(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_NAME)
    ledger.add("runs_d", ["a", "b", "c", "b"])
    ledger.add("rejections_f", ["d#f1"])
    ledger.remove("runs_d", ["b", "zz"])
    ledger.note_rejected({"x/metadata.json": "sig1"})
    ledger.put("cursor", "runs/backtest/c/metadata.json")
    ledger.close()

    again = Ledger(tmp_path / LEDGER_NAME)
    assert again.known("runs_d", ["a", "b", "c", "d#f1", "new"]) == {"a", "c"}
    assert again.all("rejections_f") == {"d#f1"}
    assert (again.count("runs_d"), again.count("rejections_f")) == (2, 1)
    assert again.get("cursor") == "runs/backtest/c/metadata.json"
    assert again.get("missing", 7) == 7
    assert again.rejected_unchanged({"x/metadata.json": "sig1", "y/metadata.json": "s"}) == {
        "x/metadata.json"
    }
    assert again.rejected_unchanged({"x/metadata.json": "sig2"}) == set()
    again.close()


def test_changed_compares_what_both_sides_know_and_takes_the_first_listing_as_baseline(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / LEDGER_NAME)
    ledger.note_seen({"a": ("e1", "s1"), "b": ("e1", ""), "c": ("", "s1")})
    listed = {
        "a": ("e1", "s1"),  # as recorded
        "b": ("e1", "s9"),  # signature unknown, ETag the same: takes the signature
        "c": ("e5", "s2"),  # signature differs
        "d": ("e1", "s1"),  # never recorded: the baseline
    }
    assert ledger.changed(listed) == {"c"}
    assert ledger.changed({"b": ("e1", "s8"), "d": ("e2", "s1")}) == {"b", "d"}
    assert ledger.seen_missing(["a", "c"]) == ["b", "d"]
    ledger.forget_seen(["b", "d"])
    assert ledger.seen_missing(["a", "c"]) == []
    ledger.close()


def _legacy(path: Path) -> None:
    """A ledger as versions before the SQLite one kept it (``iceberg.duckdb``)."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE known (tbl VARCHAR, key VARCHAR, PRIMARY KEY (tbl, key))")
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("CREATE TABLE rejected (key VARCHAR PRIMARY KEY, signature VARCHAR)")
    con.execute("CREATE TABLE seen (key VARCHAR PRIMARY KEY, etag VARCHAR, signature VARCHAR)")
    con.execute(
        "INSERT INTO known VALUES ('runs_d', 'r1'), ('runs_d', 'r2'), ('rejections_f', 'x#')"
    )
    con.execute("""INSERT INTO meta VALUES ('cursor', '"runs/k"'), ('synced:runs_d', '42')""")
    con.execute("INSERT INTO rejected VALUES ('bad/metadata.json', 'sig')")
    con.execute("INSERT INTO seen VALUES ('r1/metadata.json', 'e1', 's1')")
    con.close()


def test_a_ledger_kept_in_duckdb_is_taken_over_once(tmp_path: Path) -> None:
    _legacy(tmp_path / LEGACY_NAME)
    before = (tmp_path / LEGACY_NAME).read_bytes()
    ledger = Ledger(tmp_path / LEDGER_NAME)
    assert ledger.all("runs_d") == {"r1", "r2"}
    assert ledger.all("rejections_f") == {"x#"}
    assert (ledger.get("cursor"), ledger.get("synced:runs_d")) == ("runs/k", 42)
    assert ledger.rejected_unchanged({"bad/metadata.json": "sig"}) == {"bad/metadata.json"}
    assert ledger.changed({"r1/metadata.json": ("e2", "s1")}) == {"r1/metadata.json"}
    ledger.remove("runs_d", ["r2"])
    ledger.close()
    assert (tmp_path / LEGACY_NAME).read_bytes() == before  # left as it was

    again = Ledger(tmp_path / LEDGER_NAME)  # not imported a second time
    assert again.all("runs_d") == {"r1"}
    again.close()


def test_an_unreadable_duckdb_ledger_is_named_and_the_ledger_starts_empty(tmp_path: Path) -> None:
    (tmp_path / LEGACY_NAME).write_bytes(b"not a database" * 100)
    with capture_logs() as logs:
        ledger = Ledger(tmp_path / LEDGER_NAME)
    assert [e["event"] for e in logs] == ["iceberg.ledger_not_imported"]
    assert logs[0]["path"] == str(tmp_path / LEGACY_NAME)
    assert ledger.count("runs_d") == 0
    ledger.add("runs_d", ["r1"])
    assert ledger.known("runs_d", ["r1"]) == {"r1"}
    ledger.close()


def _steps(ledger: Ledger, call: Callable[..., object], *args: object) -> int:
    """SQLite virtual-machine instructions (in hundreds) that ``call(*args)`` runs: the work
    done, counted, not timed."""
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    ledger.con.set_progress_handler(tick, 100)
    try:
        call(*args)
    finally:
        ledger.con.set_progress_handler(None, 100)
    return count


def test_a_batch_costs_the_same_against_two_thousand_keys_as_against_200_000(
    tmp_path: Path,
) -> None:
    costs = []
    for size in (2_000, 200_000):
        ledger = Ledger(tmp_path / f"{size}" / LEDGER_NAME)
        keys = [f"run-{i:07d}" for i in range(size)]
        ledger.add("runs_d", keys)
        ledger.note_seen({f"{k}/metadata.json": ("e", "s") for k in keys[:size:10]})
        ledger.note_rejected({f"{k}/metadata.json": "s" for k in keys[:size:10]})
        batch = [f"run-{i:07d}" for i in range(0, size, size // 100)] + ["new-1", "new-2"]
        meta = {f"{k}/metadata.json": ("e", "s") for k in batch}
        costs.append(
            (
                _steps(ledger, ledger.known, "runs_d", batch),
                _steps(ledger, ledger.changed, meta),
                _steps(ledger, ledger.rejected_unchanged, dict.fromkeys(meta, "s")),
            )
        )
        assert len(ledger.known("runs_d", batch)) == 100
        ledger.close()
    small, large = costs
    for a, b in zip(small, large, strict=True):
        assert a > 0
        assert b <= 1.5 * a, costs  # 100 times the keys: a B-tree level or two deeper, no scan
    assert sqlite3.sqlite_version_info >= (3, 38)  # json_each is built in


def test_a_run_of_another_root_stays_noted_until_runs_d_drops_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_NAME)
    ledger.add("runs_d", ["b1", "b2"])
    ledger.note_elsewhere(["b1", "b2"])
    ledger.remove("rejections_f", ["b1"])  # another table: still elsewhere
    assert ledger.elsewhere() == {"b1", "b2"}
    ledger.remove("runs_d", ["b1"])
    ledger.close()
    assert Ledger(tmp_path / LEDGER_NAME).elsewhere() == {"b2"}


def test_a_legacy_import_that_fails_half_way_leaves_nothing_and_is_tried_again(
    tmp_path: Path,
) -> None:
    _legacy(tmp_path / LEGACY_NAME)
    con = duckdb.connect(str(tmp_path / LEGACY_NAME))
    con.execute("DROP TABLE seen")  # read after known, meta and rejected: they were imported
    con.execute("CREATE TABLE seen (key VARCHAR)")
    con.execute("INSERT INTO seen VALUES ('r1/metadata.json')")
    con.close()
    with capture_logs() as logs:
        ledger = Ledger(tmp_path / LEDGER_NAME)
    assert [e["event"] for e in logs] == ["iceberg.ledger_not_imported"]
    assert (ledger.count("runs_d"), ledger.get("cursor")) == (0, None)  # all or nothing
    ledger.close()

    _legacy(tmp_path / "fixed.duckdb")
    (tmp_path / "fixed.duckdb").replace(tmp_path / LEGACY_NAME)
    again = Ledger(tmp_path / LEDGER_NAME)  # nothing recorded meanwhile: tried again
    assert (again.count("runs_d"), again.get("cursor")) == (2, "runs/k")
    again.close()
