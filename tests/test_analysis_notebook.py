"""examples/analysis.md runs: every query of the notebook against runs written by the real producers.

One bus for the module: the three real producers (``run_backtest``: path-only, policy, optimize;
5-minute candles, a 4-hour horizon) write runs on two git branches spread over the last three
weeks (``created_at`` and ``git`` set in ``metadata.json`` as a producer would), among them five
policy runs on ``main`` and a policy run on a feature branch whose producer picks its worst grid
policy (a real regression, as in tests/test_regression_checks.py), then one ``sync`` publishes
them. Each ```sql block of the notebook is then one test that fails on an error, an empty result
or an entirely NULL column; the Polars blocks, the shell commands of the notebook and
examples/analysis.py (a subprocess) are run against the same publication.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pytest
from builders import DEADLINE_S, sync
from click.testing import CliRunner
from reliability.helpers import CLEAN_ENV

from quantbot_bus.backtest import policy as pol
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.cli import main
from quantbot_bus.config import Config

# one worker builds the module's `notebook` once (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_analysis_notebook")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "analysis.md"
SCRIPT = ROOT / "examples" / "analysis.py"
D_FROM, D_TO = dt.date(2026, 1, 2), dt.date(2026, 1, 8)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("analysis_notebook", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


analysis = _load_script()
QUERIES = analysis.load_queries(NOTEBOOK)


def _fenced(language: str) -> list[tuple[str, str]]:
    """(section heading, body) of every ```language block of the notebook, in order; the body
    without the fence's own indentation (blocks inside list items are indented)."""
    blocks: list[tuple[str, str]] = []
    heading, indent = "", 0
    body: list[str] | None = None
    for line in NOTEBOOK.read_text().splitlines():
        if body is not None:
            if line.strip() == "```":
                blocks.append((heading, "\n".join(body)))
                body = None
            else:
                body.append(line[indent:])
        elif line.strip() == f"```{language}":
            body, indent = [], len(line) - len(line.lstrip())
        elif line.startswith("## "):
            heading = line[3:]
    return blocks


@dataclass(frozen=True)
class Notebook:
    config: Config
    base: Path  # the directory holding exports/, as a user's working directory
    regressed: str  # the feature-branch policy run that picked its worst grid policy


def _worst_policy(results: Sequence[pol.CallTrades], policies: Sequence[pol.Policy]) -> int:
    return min(
        range(len(policies)), key=lambda k: sum(r.trades[k].realized_return_bps for r in results)
    )


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Notebook:
    base = tmp_path_factory.mktemp("notebook")
    cfg = Config(
        root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state"
    ).validate()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def produce(strategy: str, seed: int, branch: str, calls: int, days_ago: int) -> str:
        run_dir = run_backtest(
            strategy, "5m", D_FROM, D_TO, calls, seed, cfg.root, horizon_minutes=240
        ).run_dir
        meta_path = run_dir / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["git"] = {"commit": f"{seed:040x}", "branch": branch, "dirty": False}
        created = (now - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["created_at"] = meta["started_at"] = created
        meta_path.write_text(json.dumps(meta))
        return str(meta["run_id"])

    # policy: four baseline runs 14-20 days ago and a rerun on main; a broken feature-branch run
    for seed, days_ago in ((1, 20), (2, 18), (3, 16), (4, 14), (5, 2)):
        produce("policy", seed, "main", 200, days_ago)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pol, "best_policy_index", _worst_policy)
        regressed = produce("policy", 6, "feature-x", 200, 1)
    for seed, branch, days_ago in ((1, "main", 20), (2, "main", 10), (3, "feature-x", 1)):
        produce("path-only", seed, branch, 150, days_ago)
    produce("optimize", 1, "main", 100, 12)
    produce("optimize", 2, "feature-x", 100, 1)
    sync(cfg)
    return Notebook(cfg, base, regressed)


def _check_rows(what: str, names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    assert rows, f"{what}: no rows"
    for i, name in enumerate(names):
        assert any(r[i] is not None for r in rows), f"{what}: column {name!r} is entirely NULL"


def _check_file(path: Path, *, null_columns_ok: bool = False) -> int:
    """``path`` (CSV or Parquet) has rows and (unless ``null_columns_ok``) no entirely NULL
    column; returns its row count."""
    assert path.is_file(), path
    con = duckdb.connect()
    try:
        cur = con.execute(
            "SELECT * FROM read_csv_auto(?)"
            if path.suffix == ".csv"
            else "SELECT * FROM read_parquet(?)",
            [str(path)],
        )
        names = [d[0] for d in cur.description or ()]
        rows = cur.fetchall()
    finally:
        con.close()
    _check_rows(path.name, [] if null_columns_ok else names, rows)
    return len(rows)


# ---------------------------------------------------------------------------- the notebook itself


def test_the_script_reads_every_sql_block_of_the_notebook() -> None:
    text = NOTEBOOK.read_text()
    assert len(QUERIES) == len(re.findall(r"^```sql$", text, re.MULTILINE)) == len(_fenced("sql"))
    assert [q.sql for q in QUERIES] == [
        body.split("\n", 1)[1].strip().rstrip(";").strip() for _, body in _fenced("sql")
    ]
    titles = [q.title for q in QUERIES]
    assert len(set(titles)) == len(titles), "titles name the tables: keep them unique"
    sections = {q.section: q.section_title for q in QUERIES}
    assert sections == {
        1: "Catalog overview",
        2: "Callers",
        3: "Policy comparison",
        4: "Optimization frontier",
        5: "Time series",
        6: "Risk",
        7: "Cross-run comparison",
        8: "Export",
    }
    assert all(q.is_export for q in QUERIES if q.section == 8)
    assert not any(q.is_export for q in QUERIES if q.section != 8)


def test_a_malformed_notebook_is_refused() -> None:
    with pytest.raises(ValueError, match="line 3: a ```sql block starts with '-- <title>'"):
        analysis.parse_notebook("## 1. A\n\n```sql\nSELECT 1\n```\n")
    with pytest.raises(ValueError, match="outside a '## N. ' section"):
        analysis.parse_notebook("## Intro\n```sql\n-- t\nSELECT 1\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        analysis.parse_notebook("## 1. A\n```sql\n-- t\nSELECT 1\n")


@pytest.mark.parametrize("query", QUERIES, ids=[f"{q.section}-{q.title[:50]}" for q in QUERIES])
def test_each_query_returns_rows_with_no_empty_column(
    notebook: Notebook, query: Any, tmp_path: Path
) -> None:
    con = duckdb.connect(str(notebook.config.exports_dir / "bus.duckdb"), read_only=True)
    try:
        if query.is_export:
            [(rows,)] = con.execute(analysis.with_out_dir(query.sql, tmp_path)).fetchall()
            [target] = analysis.export_targets(query.sql)
            assert rows > 0 and _check_file(tmp_path / target) == rows
        else:
            cur = con.execute(query.sql)
            _check_rows(query.title, [d[0] for d in cur.description or ()], cur.fetchall())
    finally:
        con.close()


def test_regressions_the_notebook_shows_are_the_real_one(notebook: Notebook) -> None:
    [q] = [q for q in QUERIES if q.title.startswith("the regressions")]
    con = duckdb.connect(str(notebook.config.exports_dir / "bus.duckdb"), read_only=True)
    try:
        rows = con.execute(q.sql).fetchall()
    finally:
        con.close()
    assert {(r[0], r[4]) for r in rows} == {
        (notebook.regressed, "mean_return_bps"),
        (notebook.regressed, "sharpe_per_call"),
    }


def test_the_polars_blocks_run(notebook: Notebook, monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    monkeypatch.chdir(notebook.base)  # the notebook's paths are relative to the working directory
    namespace: dict[str, Any] = {}
    frames = 0
    for heading, body in _fenced("python"):
        before = dict(namespace)
        exec(compile(body, f"analysis.md ({heading})", "exec"), namespace)  # noqa: S102
        for name, value in namespace.items():
            if isinstance(value, pl.DataFrame) and before.get(name) is not value:
                frames += 1
                _check_rows(name, value.columns, value.rows())
    namespace["con"].close()
    assert frames >= 5
    assert _check_file(notebook.base / "best_callers.csv") > 0
    assert _check_file(notebook.base / "best_policy_per_caller.parquet") > 0


def _shell_commands() -> list[str]:
    return [
        line.split("  #")[0].strip()
        for heading, body in _fenced("sh")
        if heading[:2] in ("7.", "8.")
        for line in body.splitlines()
        if line.startswith("quantbot-bus ")
    ]


SHELL_COMMANDS = _shell_commands()


@pytest.mark.parametrize(
    "command", SHELL_COMMANDS, ids=[f"{i}-{c.split()[1]}" for i, c in enumerate(SHELL_COMMANDS)]
)
def test_the_shell_commands_of_the_notebook(
    notebook: Notebook, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("QUANTBOT_BUS_")]:
        monkeypatch.delenv(key)  # no config from the environment
    words = shlex.split(command.replace(" RUN", f" {notebook.regressed}"))[1:]
    redirect = None
    if ">" in words:
        words, redirect = words[: words.index(">")], words[words.index(">") + 1]
    cfg = notebook.config
    dirs = ["--root", str(cfg.root), "--exports-dir", str(cfg.exports_dir)]
    dirs += ["--state-dir", str(cfg.state_dir)]
    result = CliRunner().invoke(main, [words[0], *dirs, *words[1:]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    if redirect is not None:
        (tmp_path / redirect).write_text(result.stdout)
    if words[0] == "regressions":  # each of them lists the regressed run
        assert notebook.regressed in result.stdout
    outputs = [words[i + 1] for i, w in enumerate(words) if w in ("-o", "--output")]
    for name in outputs:
        assert _check_file(tmp_path / name) > 0
    if redirect is not None:  # the command's whole contract (docs/cli-json.md), NULLs and all
        assert _check_file(tmp_path / redirect, null_columns_ok=True) > 0


# ---------------------------------------------------------------------------- analysis.py


def test_the_script_prints_every_table_and_writes_the_exports(
    notebook: Notebook, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--exports-dir",
            str(notebook.config.exports_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=CLEAN_ENV,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower(), done.stderr
    assert "ERROR" not in done.stdout and "(no rows)" not in done.stdout
    for q in QUERIES:
        assert f"\n## {q.section}. {q.section_title}\n" in done.stdout
        assert f"-- {q.title}\n" in done.stdout
    assert notebook.regressed in done.stdout
    for q in QUERIES:
        for name in analysis.export_targets(q.sql):
            rows = _check_file(out / name)
            assert f"wrote {out / name} ({rows} rows)" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        name for q in QUERIES for name in analysis.export_targets(q.sql)
    )


def test_the_script_runs_one_section_and_fails_clearly_without_a_publication(
    notebook: Notebook, tmp_path: Path
) -> None:
    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            env=CLEAN_ENV,
            cwd=tmp_path,
        )

    done = script("--exports-dir", str(notebook.config.exports_dir), "--section", "4")
    assert done.returncode == 0, done.stderr
    assert "## 4. Optimization frontier" in done.stdout and "## 3." not in done.stdout
    assert not (tmp_path / "analysis-export").exists()  # section 8 did not run
    missing = script("--exports-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "bus.duckdb does not exist" in missing.stderr
