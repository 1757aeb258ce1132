"""Real runs and a real ledger standing for what a scale-out poll hands the alert facts
(tests of :mod:`quantbot_bus.iceberg.alert_facts`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builders import make_run

from quantbot_bus.contract import Valid, validate_run_dir
from quantbot_bus.iceberg.ledger import LEDGER_NAME, Ledger
from quantbot_bus.iceberg.result import PollResult
from quantbot_bus.objectstore.location import S3Location
from quantbot_bus.objectstore.validate import ObjectRun

LOC = S3Location.parse("s3://bucket/runs")


def uri(run_type: str, run_id: str) -> str:
    return LOC.uri(LOC.key(run_type, run_id))


class Runs:
    """Real runs (``builders.make_run``) validated by the contract into the ``ObjectRun``s a
    poll hands over, and a real ledger (``iceberg-ledger.sqlite3``) standing for ``runs_d``."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "made"
        self.ledger = Ledger(tmp / "ledger" / LEDGER_NAME)

    def run(
        self,
        run_id: str,
        status: str = "success",
        *,
        run_type: str = "backtest",
        params: dict[str, Any] | None = None,
        created_at: str = "2024-05-01T10:00:00Z",
    ) -> ObjectRun:
        run_dir = make_run(
            self.root,
            run_type,
            run_id,
            status=status,
            params=params or {"seed": 1},
            created_at=created_at,
        )
        verdict = validate_run_dir(run_dir, self.root)
        assert isinstance(verdict, Valid), verdict
        return ObjectRun(verdict.run, uri(run_type, run_id), ())

    def poll(
        self,
        registered: list[ObjectRun] | None = None,
        already: list[ObjectRun] | None = None,
        **fields: Any,
    ) -> PollResult:
        """A poll's result: ``registered`` by this daemon, ``already`` by another one."""
        mine, theirs = registered or [], already or []
        result = PollResult(
            registered=[r.info.run_id for r in mine],
            already=[r.info.run_id for r in theirs],
            **fields,
        )
        result.validated = [*mine, *theirs]
        self.ledger.add("runs_d", result.registered + result.already)
        return result

    def known(self, ids: list[str]) -> set[str]:
        return self.ledger.known("runs_d", ids)
