"""The deletion lock lost half-way (real moto_server and PostgreSQL): the server ends the session
that holds it while a deletion runs; the deletion stops before its next table, and the next
reconcile finishes it."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

pytestmark = pytest.mark.timeout(240)


def _end_the_lock_holders_session(scaleout: Any) -> int:
    """What an idle timeout or an administrator does: the server ends the session holding an
    advisory lock in this test's database. Returns how many sessions it ended."""
    con = psycopg2.connect(scaleout.catalog_uri)
    try:
        with con.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            return len(cur.fetchall())
    finally:
        con.close()


def test_a_deletion_whose_lock_is_lost_stops_and_the_next_reconcile_finishes(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.iceberg import delete
    from quantbot_bus.iceberg.locks import LockLostError
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    tag = "lock-lost-runs-with-long-ids"
    for p in scaleout.writers(1, 2, tag=tag):
        assert p.wait(120) == 0
    gone, kept = f"{tag}0-00000", f"{tag}0-00001"
    assert sorted(sync(scaleout.config()).registered) == [gone, kept]
    client = scaleout.s3.client()
    listed = client.list_objects_v2(Bucket=scaleout.bucket, Prefix=f"runs/backtest/{gone}/")
    for obj in listed["Contents"]:
        client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])

    real_delete_keys = delete.delete_keys
    tables: list[str] = []

    def delete_then_lose_the_lock(catalog: Any, name: str, *args: Any, **kwargs: Any) -> None:
        real_delete_keys(catalog, name, *args, **kwargs)
        tables.append(name)
        if len(tables) == 1:  # the first table done: the server ends the lock's session
            assert _end_the_lock_holders_session(scaleout) == 1

    with monkeypatch.context() as m:
        m.setattr(delete, "delete_keys", delete_then_lose_the_lock)
        with pytest.raises(LockLostError, match=r"^lost the deletion lock \(OperationalError"):
            sync(scaleout.config())
    assert tables == ["fills"]  # stopped before the next table
    assert scaleout.run_counts("fills") == {kept: 2}
    # trades (registered in place: the deleted object) and the core tables still hold the run
    assert scaleout.run_counts("artifacts_f") == {gone: 2, kept: 2}
    assert scaleout.run_counts("runs_d") == {gone: 1, kept: 1}  # still a candidate

    assert list(sync(scaleout.config()).deleted) == [gone]
    for table, rows in (("runs_d", 1), ("artifacts_f", 2), ("trades", 3), ("fills", 2)):
        assert scaleout.run_counts(table) == {kept: rows}, table


def test_letting_go_of_a_lock_whose_session_ended_never_hides_the_work(scaleout: Any) -> None:
    """The unlock fails on the ended session: an error in flight is the one raised (not the
    unlock's), and a body that went through is not turned into a failure (its work, committed,
    would go unrecorded); the failed unlock is logged and its connection closed."""
    from structlog.testing import capture_logs

    from quantbot_bus.iceberg.locks import deletion_lock

    engine = scaleout.catalog().engine
    with pytest.raises(ValueError, match="^the deletion's own error$"):
        with deletion_lock(engine) as lock:
            assert lock
            assert _end_the_lock_holders_session(scaleout) == 1
            raise ValueError("the deletion's own error")
    with capture_logs() as logs:
        with deletion_lock(engine) as lock:
            assert lock
            assert _end_the_lock_holders_session(scaleout) == 1
    failed = [e for e in logs if e["event"] == "iceberg.deletion_unlock_failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("OperationalError: "), logs
