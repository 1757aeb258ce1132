"""A registered run written again in the bucket (real moto_server and PostgreSQL): the reconcile
replaces its old version in every table, once, whichever daemons see the change; a new version
that breaks the contract takes the old one out and is rejected with a reason."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from builders import wait_for

pytestmark = pytest.mark.timeout(240)

TAG = "changed-runs-longer-than-sixteen-chars"


def _rewrite(scaleout: Any, run_id: str, rows: int, edit: Any = None) -> None:
    """Write run ``run_id`` again over its objects as a producer in any language would (plain
    PUTs, ``metadata.json`` last): ``rows`` trades; ``edit(meta)`` may change metadata.json."""
    from quantbot_bus.writer import RunWriter

    local = Path(scaleout.tmp) / f"v-{uuid.uuid4().hex[:8]}"
    with RunWriter(local, "backtest", run_id=run_id, git=None) as w:
        w.write_table("trades", pa.table({"run_id": [run_id] * rows, "pnl": [0.5] * rows}))
        w.write_table("fills", pa.table({"qty": list(range(rows))}))
        w.set_metrics(sharpe=float(rows))
    run_dir = local / "backtest" / run_id
    meta = json.loads((run_dir / "metadata.json").read_text())
    if edit is not None:
        edit(meta)
    client, bucket = scaleout.s3.client(), scaleout.bucket
    for path in sorted(run_dir.glob("*.parquet")):
        client.upload_file(str(path), bucket, f"runs/backtest/{run_id}/{path.name}")
    client.put_object(
        Bucket=bucket, Key=f"runs/backtest/{run_id}/metadata.json", Body=json.dumps(meta).encode()
    )


def _every_row_reads(scaleout: Any, table: str) -> int:
    """Rows of ``table`` read in full by pyiceberg (a data file whose object changed size under
    it would fail here)."""
    return int(scaleout.catalog().load_table(f"quantbot.{table}").scan().to_arrow().num_rows)


def _sharpe(scaleout: Any, run_id: str) -> float:
    from pyiceberg.expressions import EqualTo

    one_run = EqualTo("run_id", run_id)  # type: ignore[call-arg,arg-type]
    rows = (
        scaleout.catalog()
        .load_table("quantbot.runs_d")
        .scan(row_filter=one_run, selected_fields=("metrics",))
        .to_arrow()
        .to_pylist()
    )
    assert len(rows) == 1
    return float(json.loads(rows[0]["metrics"])["sharpe"])


def _open_rejections(scaleout: Any) -> list[dict[str, Any]]:
    from quantbot_bus.catalog.queries import list_rejections
    from quantbot_bus.iceberg.reader import open_iceberg_reader

    con = open_iceberg_reader(scaleout.config())
    try:
        return list_rejections(con)
    finally:
        con.close()


@pytest.fixture
def three_runs(scaleout: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    for p in scaleout.writers(1, 3, tag=TAG):
        assert p.wait(120) == 0
    ids = [f"{TAG}0-{i:05d}" for i in range(3)]
    assert sorted(sync(scaleout.config()).registered) == ids
    assert scaleout.run_counts("trades") == {r: 3 for r in ids}
    return ids


def test_a_run_written_again_replaces_its_old_version_in_every_table(
    scaleout: Any, three_runs: list[str]
) -> None:
    from quantbot_bus.pipeline import sync

    ids = three_runs
    changed, kept = ids[1], {ids[0], ids[2]}
    _rewrite(scaleout, changed, rows=5)

    result = sync(scaleout.config())
    assert (list(result.updated), result.registered, list(result.deleted)) == ([changed], [], [])
    assert scaleout.run_counts("runs_d") == {r: 1 for r in ids}
    assert scaleout.run_counts("artifacts_f") == {r: 2 for r in ids}
    assert scaleout.run_counts("trades") == {**{r: 3 for r in kept}, changed: 5}
    assert scaleout.run_counts("fills") == {**{r: 2 for r in kept}, changed: 5}
    assert _sharpe(scaleout, changed) == 5.0
    assert _every_row_reads(scaleout, "trades") == 11
    assert _every_row_reads(scaleout, "fills") == 9

    # done once; a daemon on another host, whose ledger never saw the old version, agrees
    assert list(sync(scaleout.config()).updated) == []
    assert list(sync(scaleout.config("state-other-host")).updated) == []
    # and that daemon notices the next change as well
    _rewrite(scaleout, changed, rows=7)
    assert list(sync(scaleout.config("state-other-host")).updated) == [changed]
    assert scaleout.run_counts("trades") == {**{r: 3 for r in kept}, changed: 7}
    assert list(sync(scaleout.config()).updated) == []  # already replaced: same fingerprint
    assert scaleout.run_counts("runs_d") == {r: 1 for r in ids}


def test_a_new_version_that_breaks_the_contract_takes_the_old_one_out(
    scaleout: Any, three_runs: list[str]
) -> None:
    from quantbot_bus.pipeline import sync

    ids = three_runs
    changed, kept = ids[0], {ids[1], ids[2]}

    def wrong_rows(meta: dict[str, Any]) -> None:
        meta["artifacts"][0]["rows"] += 1

    _rewrite(scaleout, changed, rows=4, edit=wrong_rows)
    result = sync(scaleout.config())
    assert list(result.updated) == [] and len(result.rejected) == 1
    [rejection] = result.rejected
    assert rejection.run_id == changed
    assert "declares 5" in rejection.reason
    assert rejection.reason.endswith(
        "(the run changed after it was registered; its old version is taken out of the tables)"
    )
    assert scaleout.run_counts("runs_d") == {r: 1 for r in kept}
    assert scaleout.run_counts("trades") == {r: 3 for r in kept}
    assert _every_row_reads(scaleout, "trades") == 6
    assert sync(scaleout.config()).rejected == []  # recorded once, not validated again
    [listed] = _open_rejections(scaleout)  # what `quantbot-bus rejected` lists
    assert (listed["run_id"], listed["reason"], listed["attempts"]) == (
        changed,
        rejection.reason,
        1,
    )

    def no_params(meta: dict[str, Any]) -> None:
        meta["params"] = "not an object"

    _rewrite(scaleout, changed, rows=4, edit=no_params)  # broken another way: a second reason
    [second] = sync(scaleout.config()).rejected
    [listed] = _open_rejections(scaleout)  # still one entry for the directory, the new reason
    assert (listed["reason"], listed["attempts"]) == (second.reason, 2)
    assert "params" in second.reason

    _rewrite(scaleout, changed, rows=4)  # fixed
    assert sync(scaleout.config()).registered == [changed]
    assert scaleout.run_counts("trades") == {**{r: 3 for r in kept}, changed: 4}
    assert _open_rejections(scaleout) == []  # resolved by the registration


def _reconcile_at_once(buses: list[Any]) -> list[list[str]]:
    """Each bus runs two full reconciles (the second decides what the lock deferred), the two
    buses starting together in their own threads; returns the runs each one replaced."""
    start = threading.Barrier(len(buses))
    updated: list[list[str]] = [[] for _ in buses]
    errors: list[BaseException] = []

    def reconcile(i: int) -> None:
        try:
            start.wait(30)
            updated[i] += buses[i].poll(full=True).updated
            updated[i] += buses[i].poll(full=True).updated
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=reconcile, args=(i,)) for i in range(len(buses))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    return updated


def test_two_daemons_deciding_the_same_change_at_once_leave_one_copy(
    scaleout: Any, three_runs: list[str]
) -> None:
    """Both daemons' reconciles suspect the changed run at the same moment; the deletion lock
    lets one replace it, the other finds the new version there (or waits for the lock and
    does so on its next reconcile). Every table ends with one copy of the new version."""
    from quantbot_bus.iceberg.bus import IcebergBus

    ids = three_runs
    buses = [IcebergBus(scaleout.config(s)) for s in ("state", "state-b")]
    try:
        for bus in buses:  # both ledgers know the runs and their objects
            bus.poll(full=True)
        for round_rows in (6, 8):
            for changed in ids:
                _rewrite(scaleout, changed, rows=round_rows)
            updated = _reconcile_at_once(buses)
            assert sorted(updated[0] + updated[1]) == ids  # each replaced by one daemon only
            for table, per_run in (("runs_d", 1), ("artifacts_f", 2)):
                assert scaleout.run_counts(table) == {r: per_run for r in ids}
            assert scaleout.run_counts("trades") == {r: round_rows for r in ids}
            assert scaleout.run_counts("fills") == {r: round_rows for r in ids}
    finally:
        for bus in buses:
            bus.close()


def test_the_deletion_lock_is_held_by_one_session_and_freed_when_it_ends(scaleout: Any) -> None:
    from quantbot_bus.iceberg.locks import deletion_lock

    one, two = scaleout.catalog().engine, scaleout.catalog().engine
    with deletion_lock(one) as first:
        with deletion_lock(two) as second:
            assert (bool(first), bool(second)) == (True, False)
    with deletion_lock(two) as again:
        assert again
    # a holder whose connection dies (a daemon killed) frees it
    con = one.raw_connection()
    cur = con.cursor()
    cur.execute("SELECT pg_try_advisory_lock(hashtextextended('quantbot-bus deletions', 0))")
    assert cur.fetchone()[0] is True
    with deletion_lock(two) as blocked:
        assert not blocked
    con.invalidate()  # the session ends (as a SIGKILL would end it)

    def free() -> bool:
        with deletion_lock(two) as got:
            return bool(got)

    # freed as soon as the server has seen the session end (its backend exits asynchronously)
    wait_for(free, "the lock freed once its holder's session ended", 30)
