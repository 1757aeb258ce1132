"""`quantbot-bus report` on the scale-out backend (real moto_server and PostgreSQL): the catalog
and the runs' own tables are drawn from the Iceberg tables; the sections built from summary
exports, which this backend does not compute, say so instead of "no ... runs yet"."""

from __future__ import annotations

import html as htmllib
import re
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)


def _section(page: str, name: str) -> str:
    m = re.search(rf'<section id="{name}"[^>]*>(.*?)</section>', page, re.S)
    assert m, f"section {name} missing"
    return htmllib.unescape(m.group(1))


def test_the_dashboard_on_iceberg_draws_what_the_tables_hold_and_names_what_they_lack(
    scaleout: Any, tmp_path: Any
) -> None:
    from quantbot_bus.report.sections import NOT_ON_ICEBERG

    env = scaleout.env()
    qb = [sys.executable, "-m", "quantbot_bus.cli"]
    subprocess.run(  # a producer on another host: its run goes to the bucket
        [*qb, "backtest", "run", "--strategy", "policy"], env=env, check=True, capture_output=True
    )
    subprocess.run([*qb, "sync"], env=env, check=True, capture_output=True)
    out = tmp_path / "report"
    subprocess.run([*qb, "report", "--out", str(out)], env=env, check=True, capture_output=True)
    page = (out / "index.html").read_text()

    catalog = _section(page, "overview")
    assert "<b>1</b><small>live runs</small>" in catalog, catalog[:600]
    assert 'data-chart="equity"' in _section(page, "tearsheet")
    distributions = _section(page, "distributions")
    assert 'data-chart="mae-hist"' in distributions
    assert f"worst drawdown per run: {NOT_ON_ICEBERG}" in distributions
    for name in ("leaderboard", "policies", "frontiers", "regressions"):
        section = _section(page, name)
        assert NOT_ON_ICEBERG in section, name
        assert "runs yet" not in section and "checks yet" not in section, name
