"""Helpers of the scale-out tests: a bus on a real S3-compatible server and a real PostgreSQL
(:mod:`servers`), runs uploaded by real writer processes, and counts read back through
pyiceberg the way another host would."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from reliability.helpers import DaemonProcess
from servers import Postgres, S3Server

from quantbot_bus.config import Config, load_config

WRITER = Path(__file__).with_name("_s3_writer.py")


@dataclass
class ScaleOut:
    """One test's bus: its own bucket and its own database on the shared servers."""

    pg: Postgres
    s3: S3Server
    bucket: str
    database: str
    tmp: Path
    daemons: list[DaemonProcess] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def close(self) -> None:
        """SIGKILL and reap every daemon and writer the test started, whatever happened."""
        for d in self.daemons:
            d.ensure_dead()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(60)

    @property
    def catalog_uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg.port}/{self.database}"

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}/runs"

    def env(self, state: str = "state") -> dict[str, str]:
        return {
            **self.s3.env,
            "QUANTBOT_BUS_ROOT": self.root,
            "QUANTBOT_BUS_CATALOG": "iceberg",
            "QUANTBOT_BUS_CATALOG_URI": self.catalog_uri,
            "QUANTBOT_BUS_WAREHOUSE": f"s3://{self.bucket}/warehouse",
            "QUANTBOT_BUS_STATE_DIR": str(self.tmp / state),
            "QUANTBOT_BUS_POLL_INTERVAL_S": "0.5",
        }

    def config(self, state: str = "state") -> Config:
        return load_config(env=self.env(state), cwd=self.tmp)

    def reach_s3(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """This test process reaches the object store (``AWS_*``) as a producer would."""
        for k, v in self.s3.env.items():
            monkeypatch.setenv(k, v)

    def daemon(self, state: str = "state", **env: str) -> DaemonProcess:
        """An unstarted daemon with its own state dir (a daemon on another host)."""
        d = DaemonProcess(
            self.config(state),
            path_flags=False,
            cwd=self.tmp,
            env={**self.env(state), **env},
            log_dir=self.tmp / f"logs-{state}",
        )
        self.daemons.append(d)
        return d

    def writers(
        self, n_procs: int, runs_each: int, *, tag: str = "w"
    ) -> list[subprocess.Popen[bytes]]:
        """``n_procs`` writer processes, each uploading ``runs_each`` runs with RunWriter."""
        env = {**os.environ, **self.s3.env}
        procs = [
            subprocess.Popen(
                [sys.executable, str(WRITER), self.root, f"{tag}{i}", str(runs_each)],
                env=env,
                stdin=subprocess.DEVNULL,
            )
            for i in range(n_procs)
        ]
        self.procs += procs
        return procs

    def upload(self, run_id: str, *, incomplete: bool = False, root: str | None = None) -> None:
        """Upload a run RunWriter wrote locally (:func:`local_run`) to ``backtest/<run_id>``
        under ``root`` (the bus's by default); ``incomplete``: its ``trades.parquet`` is
        declared and never uploaded."""
        from quantbot_bus.objectstore.location import S3Location
        from quantbot_bus.objectstore.upload import upload_run

        run = local_run(
            self.tmp / "uploads" / uuid.uuid4().hex[:8], run_id, _no_trades if incomplete else None
        )
        loc = S3Location.parse(root or self.root)
        upload_run(self.s3.client(), run, loc, "backtest", run_id)

    def catalog(self) -> Any:
        from quantbot_bus.iceberg.tables import open_catalog
        from quantbot_bus.objectstore.location import S3Settings

        props = S3Settings.from_env(self.s3.env).pyiceberg_properties()
        return open_catalog(self.catalog_uri, f"s3://{self.bucket}/warehouse", props)

    def run_counts(self, table: str) -> Counter[str]:
        """Rows per run id in ``quantbot.<table>`` (empty if the table does not exist)."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            t = self.catalog().load_table(f"quantbot.{table}")
        except NoSuchTableError:
            return Counter()
        col = t.scan(selected_fields=("run_id",)).to_arrow().column("run_id").to_pylist()
        return Counter(col)


def new_scaleout(pg: Postgres, s3: S3Server, tmp: Path) -> ScaleOut:
    name = "qb" + uuid.uuid4().hex[:12]
    s3.make_bucket(name)
    con = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres")
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    con.close()
    return ScaleOut(pg, s3, name, name, tmp)


def _no_trades(meta: dict[str, Any], run_dir: Path) -> None:
    (run_dir / "trades.parquet").unlink()  # declared, never uploaded


def local_run(tmp: Any, run_id: str, edit: Any = None) -> Any:
    """A run written locally by RunWriter; ``edit(meta)`` may change its metadata.json."""
    import json

    import pyarrow as pa

    from quantbot_bus.writer import RunWriter

    with RunWriter(tmp / "local", "backtest", run_id=run_id, git=None) as w:
        w.write_table("trades", pa.table({"run_id": [run_id] * 3, "pnl": [0.1, 0.2, -0.1]}))
    run_dir = tmp / "local" / "backtest" / run_id
    if edit is not None:
        meta = json.loads((run_dir / "metadata.json").read_text())
        edit(meta, run_dir)
        (run_dir / "metadata.json").write_text(json.dumps(meta))
    return run_dir
