"""Opening the SQL catalog on a new database while another daemon creates pyiceberg's tables
(real PostgreSQL): the one whose CREATE TABLE loses opens the catalog the other made."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)


def _blocked_on_a_lock(so: Any) -> bool:
    import psycopg2

    con = psycopg2.connect(host="127.0.0.1", port=so.pg.port, user="postgres", dbname=so.database)
    try:
        with con.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND wait_event_type = 'Lock' AND query ILIKE '%%CREATE TABLE%%'",
                (so.database,),
            )
            row = cur.fetchone()
            return bool(row and row[0])
    finally:
        con.close()


def test_a_daemon_whose_create_table_loses_the_race_opens_the_catalog(scaleout: Any) -> None:
    """Another daemon's transaction creates pyiceberg's tables first: ours, not seeing them
    yet, creates them too, waits on that transaction's lock and fails with a duplicate key when
    it commits; open_catalog then opens the tables the other daemon made."""
    from pyiceberg.catalog.sql import SqlCatalogBaseTable
    from sqlalchemy import create_engine

    from quantbot_bus.iceberg.tables import open_catalog, sqlalchemy_uri

    other = create_engine(sqlalchemy_uri(scaleout.catalog_uri))
    con = other.connect()
    tx = con.begin()
    SqlCatalogBaseTable.metadata.create_all(con)  # not committed: invisible to ours
    opened: list[Any] = []
    failed: list[BaseException] = []

    def open_it() -> None:
        try:
            opened.append(open_catalog(scaleout.catalog_uri, f"s3://{scaleout.bucket}/wh", {}))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            failed.append(exc)

    opener = threading.Thread(target=open_it)
    opener.start()
    try:
        deadline = time.monotonic() + 30
        while not _blocked_on_a_lock(scaleout):
            assert time.monotonic() < deadline, "our CREATE TABLE never waited on the other's"
            assert opener.is_alive(), f"open_catalog ended before the race: {failed or opened}"
            time.sleep(0.05)
    finally:
        tx.commit()
        con.close()
        opener.join(60)
    other.dispose()
    assert not failed, failed
    (catalog,) = opened
    catalog.create_namespace("quantbot")
    assert [tuple(n) for n in catalog.list_namespaces()] == [("quantbot",)]
    catalog.engine.dispose()
