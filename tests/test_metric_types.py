"""Metrics keep their JSON types from the producer to the reader: an integer metric comes back as
an integer (``calls: 200``, not ``200.0``), a float as a float."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from builders import cli, make_run, snapshot_query, sync

from quantbot_bus.config import Config
from quantbot_bus.contract import Valid, validate_run_dir
from quantbot_bus.writer import RunWriter

pytestmark = pytest.mark.usefixtures("cli_env")


def _cli(bus: Config, *args: str) -> str:
    result = cli(bus, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("layout", ["v1", "seed"])
def test_integer_metrics_stay_integers_from_writer_to_show(bus: Config, layout: str) -> None:
    with RunWriter(bus.root, "policy", run_id="m1", git=None, layout=layout) as w:
        w.write_table("results", pa.table({"x": [1, 2, 3]}))
        w.set_metrics(calls=200, ret=1.5, big=2**62, zero=0)
    _cli(bus, "sync", "--format", "json")

    (run,) = json.loads(_cli(bus, "show", "m1", "--format", "json"))
    metrics = run["metrics"]
    if layout == "seed":  # the seed layout adds its step timings (timing_<step>_ms)
        metrics = {k: v for k, v in metrics.items() if not k.startswith("timing_")}
    assert metrics == {"calls": 200, "ret": 1.5, "big": 2**62, "zero": 0}
    assert [type(metrics[k]) for k in ("calls", "ret", "big", "zero")] == [int, float, int, int]

    ((text, calls_type, ret_type),) = snapshot_query(
        bus,
        "SELECT CAST(metrics AS VARCHAR), json_type(metrics, '$.calls'), "
        "json_type(metrics, '$.ret') FROM catalog.runs_d WHERE run_id = 'm1'",
    )
    assert '"calls": 200' in text and '"ret": 1.5' in text, text
    assert (calls_type, ret_type) == ("UBIGINT", "DOUBLE")


def test_a_whole_float_stays_a_float(bus: Config) -> None:
    """2.0 written as a float is read back as 2.0: the type in metadata.json is kept."""
    make_run(bus.root, "policy", "f1", metrics={"sharpe": 2.0, "n": 7})
    result = validate_run_dir(bus.root / "policy" / "f1", bus.root)
    assert isinstance(result, Valid)
    assert result.run.metrics == {"sharpe": 2.0, "n": 7}
    assert (type(result.run.metrics["sharpe"]), type(result.run.metrics["n"])) == (float, int)
    _cli(bus, "sync", "--format", "json")
    (run,) = json.loads(_cli(bus, "show", "f1", "--format", "json"))
    assert json.dumps(run["metrics"], sort_keys=True) == '{"n": 7, "sharpe": 2.0}'


def test_integer_metrics_are_integer_columns_of_exports_runs(bus: Config) -> None:
    """Positive and negative integers (JSON's UBIGINT and BIGINT, merged as HUGEINT) make a
    BIGINT column; an integer beside a float makes a DOUBLE one."""
    make_run(bus.root, "policy", "a", metrics={"calls": 200, "pnl": -3, "ret": 2})
    make_run(bus.root, "policy", "b", metrics={"calls": 7, "pnl": 4, "ret": 1.5})
    sync(bus)
    rows = snapshot_query(
        bus,
        "SELECT run_id, metric_calls, metric_pnl, metric_ret, typeof(metric_calls), "
        "typeof(metric_pnl), typeof(metric_ret) FROM exports.runs ORDER BY run_id",
    )
    assert rows == [
        ("a", 200, -3, 2.0, "BIGINT", "BIGINT", "DOUBLE"),
        ("b", 7, 4, 1.5, "BIGINT", "BIGINT", "DOUBLE"),
    ]
