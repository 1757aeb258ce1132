"""The HTML dashboard (``quantbot-bus report``): built from a real catalog (the real producers,
``sync``), its sections, numbers, escaping and charts; every section on an empty bus; the
tearsheet's series; and the page as the system chromium renders it from ``file://``."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest
from browser import CHROMIUM, chromium
from builders import PATH, add_path_run, make_run, path_metrics, snapshot_query, sync
from click.testing import CliRunner

from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.errors import NotFoundError
from quantbot_bus.report import write_report

# one worker builds the module's `built` once (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_report")

PROJECT = Path(__file__).resolve().parents[1]
D_FROM, D_TO = dt.date(2026, 1, 2), dt.date(2026, 1, 8)
HOSTILE = "<script>alert(1)</script>"
SECTIONS = (
    "overview",
    "leaderboard",
    "policies",
    "frontiers",
    "tearsheet",
    "distributions",
    "regressions",
    "rejected",
)
#: Anything that would make the browser fetch: a URL in src/href, or in CSS url().
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|xlink:href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//))"""
    r"""|url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)""",
    re.I,
)


def _config(tmp: Path) -> Config:
    cfg = Config(root=tmp / "artifacts", exports_dir=tmp / "exports", state_dir=tmp / "state")
    for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
        d.mkdir(parents=True)
    return cfg.validate()


def _alerts(cfg: Config) -> None:
    """``state_dir/alerts.json`` as the alerter writes it: one firing, one resolved condition."""

    def entry(key: str, status: str, message: str) -> dict[str, Any]:
        return {
            "key": key,
            "rule": "rejections",
            "severity": "critical",
            "message": message,
            "details": {},
            "status": status,
            "first_seen_at": "2026-01-08T10:00:00.000Z",
            "last_seen_at": "2026-01-08T11:00:00.000Z",
            "resolved_at": "2026-01-08T11:00:00.000Z" if status == "resolved" else None,
        }

    doc = {
        "version": 1,
        "updated_at": "2026-01-08T11:00:00.000Z",
        "conditions": {
            "firing-1": entry("firing-1", "firing", f"rejections piling up {HOSTILE}"),
            "gone-1": entry("gone-1", "resolved", "an old resolved alert"),
        },
        "sent": [],
    }
    (cfg.state_dir / "alerts.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bus with the three real producers' runs, a run whose caller name is markup, a rejected
    run; synced; its report written once."""
    cfg = _config(tmp_path_factory.mktemp("bus"))
    policy = run_backtest("policy", "1m", D_FROM, D_TO, 60, 1, cfg.root)
    run_backtest("path-only", "1m", D_FROM, D_TO, 40, 2, cfg.root)
    optimize = run_backtest("optimize", "1m", D_FROM, D_TO, 30, 3, cfg.root)
    hostile = path_metrics("hostile-run", 30, 4)
    hostile = hostile.set_column(
        hostile.schema.get_field_index("caller_name"), "caller_name", pa.array([HOSTILE] * 30)
    )
    make_run(cfg.root, "backtest-path", "hostile-run", {PATH: hostile})

    def break_it(meta: dict[str, Any], run_dir: Path) -> None:
        meta["artifacts"][0]["rows"] = 999  # the footer says otherwise: rejected

    make_run(
        cfg.root, "broken", "bad-run", {"results": 3}, mutate=break_it, dir_name=f"bad{HOSTILE}"
    )

    def not_uploaded_yet(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / meta["artifacts"][0]["file"]).unlink()  # declared, not there: pending

    make_run(cfg.root, "backtest-path", "late-run", {"results": 2}, mutate=not_uploaded_yet)
    _alerts(cfg)
    sync(cfg)
    result = write_report(cfg)
    return {
        "cfg": cfg,
        "result": result,
        "html": result.path.read_text(encoding="utf-8"),
        "policy_run": policy.run_id,
        "optimize_run": optimize.run_id,
    }


def _section(html: str, name: str) -> str:
    m = re.search(rf'<section id="{name}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"section {name} missing"
    return m.group(1)


def test_report_is_written_with_every_section(built: dict[str, Any]) -> None:
    cfg, result, html = built["cfg"], built["result"], built["html"]
    assert result.path == cfg.exports_dir / "report" / "index.html"
    assert result.files == (result.path,)
    assert result.bytes == len(html.encode()) and result.seconds > 0
    for name in SECTIONS:
        assert f'href="#{name}"' in html  # the in-page nav
        _section(html, name)
    # no leftovers of the atomic write
    assert [p.name for p in result.path.parent.iterdir()] == ["index.html"]


def test_catalog_numbers(built: dict[str, Any]) -> None:
    body = _section(built["html"], "overview")
    runs = snapshot_query(
        built["cfg"], "SELECT count(*) FROM catalog.runs_d WHERE deleted_at IS NULL"
    )
    assert runs[0][0] == 4  # three producers + the hostile path run
    assert "<b>4</b><small>live runs</small>" in body
    assert "<b>1</b><small>open rejections</small>" in body
    assert 'data-chart="runs-over-time"' in body


def test_leaderboard_shows_the_top_caller_and_escapes_names(built: dict[str, Any]) -> None:
    html = built["html"]
    top = snapshot_query(
        built["cfg"],
        "SELECT caller_name FROM exports.caller_leaderboard "
        "ORDER BY hit_2x_rate DESC, calls DESC, caller_name LIMIT 1",
    )[0][0]
    body = _section(html, "leaderboard")
    first_row = re.search(r"<tbody><tr><td>(.*?)</td>", body)
    assert first_row and first_row.group(1) == top.replace("<", "&lt;").replace(">", "&gt;")
    assert 'data-chart="leaderboard"' in body and "<svg" in body
    # the markup caller is text everywhere (table, chart labels, alert, rejection), never a tag
    assert HOSTILE not in html and "<script" not in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escaped in body  # in the table
    assert body.count("&lt;script&gt;alert(1)") == 2  # and (shortened) in the chart's labels
    assert escaped in _section(html, "rejected") and escaped in _section(html, "regressions")


def test_no_external_references(built: dict[str, Any]) -> None:
    html = built["html"]
    assert EXTERNAL.findall(html) == []
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html and "<img" not in html


def test_policy_frontier_and_tearsheet_numbers(built: dict[str, Any]) -> None:
    cfg, html = built["cfg"], built["html"]
    pol = _section(html, "policies")
    assert 'data-chart="policies"' in pol and "no policy runs yet" not in pol
    n_policies = snapshot_query(
        cfg, "SELECT count(DISTINCT policy_id) FROM exports.policy_comparison"
    )
    assert pol.count("<tr>") == 1 + min(30, n_policies[0][0])

    fr = _section(html, "frontiers")
    pareto = snapshot_query(
        cfg,
        "SELECT count(*) FROM exports.frontiers WHERE pareto AND run_id = ?",
        [built["optimize_run"]],
    )[0][0]
    assert pareto > 0
    assert built["optimize_run"] in fr and f"{pareto:,} on the Pareto set" in fr
    assert 'data-chart="frontiers"' in fr and "Pareto set" in fr

    ts = _section(html, "tearsheet")
    assert built["policy_run"] in ts
    total = snapshot_query(
        cfg,
        "SELECT sum(return_bps), count(*) FROM exports.backtest_call_results WHERE run_id = ?",
        [built["policy_run"]],
    )[0]
    assert f"<b>{total[1]:,}</b><small>calls</small>" in ts
    assert f"{total[0]:,.0f}</span></b><small>total return (bps)" in ts
    for chart in ("equity", "underwater", "monthly", "rolling-sharpe"):
        assert f'data-chart="{chart}"><svg' in ts
    assert ">Jan<" in ts  # the heatmap's month labels are text in the SVG

    dist = _section(html, "distributions")
    for chart in ("dd-hist", "mae-hist", "run-dd-hist"):
        assert f'data-chart="{chart}"><svg' in dist


def test_a_seed_layout_policy_run_gets_its_tearsheet(tmp_path: Path) -> None:
    """``backtest run --layout seed`` writes the per-call results as ``policy/
    backtest_call_results`` (exported as ``exports.policy__backtest_call_results``): the newest
    such run is the tearsheet's, drawn from that table."""
    cfg = _config(tmp_path)
    day = D_FROM + dt.timedelta(days=1)
    seed = run_backtest("policy", "1m", D_FROM, day, 12, 5, cfg.root, layout="seed")
    sync(cfg)
    ts = _section(write_report(cfg).path.read_text(encoding="utf-8"), "tearsheet")
    assert seed.run_id in ts and "no policy runs yet" not in ts
    total = snapshot_query(
        cfg,
        "SELECT sum(return_bps), count(*) FROM exports.policy__backtest_call_results "
        "WHERE run_id = ?",
        [seed.run_id],
    )[0]
    assert total[1] > 0
    assert f"<b>{total[1]:,}</b><small>calls</small>" in ts
    assert f"{total[0]:,.0f}</span></b><small>total return (bps)" in ts
    assert 'data-chart="equity"><svg' in ts


def test_alerts_regressions_rejections_pending(built: dict[str, Any]) -> None:
    html = built["html"]
    reg = _section(html, "regressions")
    assert "rejections piling up" in reg and "an old resolved alert" not in reg
    has_view = snapshot_query(
        built["cfg"],
        "SELECT count(*) FROM duckdb_views() WHERE schema_name = 'exports' AND view_name = 'regressions'",
    )[0][0]
    if has_view:
        assert "no regression checks yet" not in reg
    else:
        assert "no regression checks yet" in reg
    rej = _section(html, "rejected")
    assert "Rejected runs (1 open)" in rej and "bad&lt;script&gt;" in rej
    # no daemon ever ran: the pending list the sync wrote
    assert "1 runs pending (metadata.json written, files not complete); the oldest seen" in rej
    assert "as the last sync found them at" in rej and "no daemon status" not in rej


def test_run_option_picks_the_tearsheet_and_unknown_run_is_not_found(
    built: dict[str, Any], tmp_path: Path
) -> None:
    cfg = built["cfg"]
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--root", str(cfg.root),
            "--exports-dir", str(cfg.exports_dir),
            "--state-dir", str(cfg.state_dir),
            "--out", str(tmp_path / "r"),
            "--run", built["optimize_run"],
            "--format", "json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["path"] == str((tmp_path / "r" / "index.html").absolute())
    assert row["bytes"] == (tmp_path / "r" / "index.html").stat().st_size
    ts = _section((tmp_path / "r" / "index.html").read_text(), "tearsheet")
    assert built["optimize_run"] in ts and "no backtest_call_results rows" in ts
    with pytest.raises(NotFoundError):
        write_report(cfg, tmp_path / "x", run_id="no-such-run")
    assert not (tmp_path / "x").exists()
    missing = CliRunner().invoke(
        main, ["report", "--exports-dir", str(cfg.exports_dir), "--run", "no-such-run"]
    )
    assert missing.exit_code == 5 and "no-such-run" in missing.output


def test_open_hands_the_page_to_the_browser_or_says_there_is_none(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """--open as a process: $BROWSER (here a script recording what it was given) gets the
    page's file:// URI; with no browser at all, the command says where the page is."""
    import subprocess
    import sys

    cfg = built["cfg"]
    args = [sys.executable, "-m", "quantbot_bus.cli", "report", "--open", "--format", "table"]
    args += ["--out", str(tmp_path)]
    args += ["--root", str(cfg.root), "--exports-dir", str(cfg.exports_dir)]
    args += ["--state-dir", str(cfg.state_dir)]
    seen = tmp_path / "opened"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {seen}\n')
    browser.chmod(0o755)
    page = (tmp_path / "index.html").absolute()
    base = {"PATH": "/nonexistent", "HOME": str(tmp_path), "PYTHONPATH": str(PROJECT)}
    done = subprocess.run(
        args, env={**base, "BROWSER": f"{browser} %s"}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, seen.read_text()) == (f"{page}\n", page.as_uri())
    done = subprocess.run(args, env=base, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{page}\n"
    assert done.stderr.endswith(f"no web browser found here: open {page.as_uri()} in one\n")


def test_every_section_renders_on_an_empty_bus(bus: Config) -> None:
    html = write_report(bus).path.read_text()
    for name in SECTIONS:
        _section(html, name)
    assert "nothing published yet" in _section(html, "overview")
    assert "no policy runs yet" in _section(html, "policies")
    assert "no policy runs yet" in _section(html, "tearsheet")
    assert "no optimize runs yet" in _section(html, "frontiers")
    assert "no regression checks yet" in _section(html, "regressions")
    assert "no open alerts" in _section(html, "regressions")
    assert "<svg" not in html


def test_runs_without_the_plotted_tables(bus: Config) -> None:
    """Only a path-only run: the policy, frontier and tearsheet sections say so; the caller and
    drawdown plots are there."""
    add_path_run(bus, "p1", 40, 1)
    sync(bus)
    html = write_report(bus).path.read_text()
    assert "no policy runs yet" in _section(html, "policies")
    assert "no policy runs yet" in _section(html, "tearsheet")
    assert "no optimize runs yet" in _section(html, "frontiers")
    assert 'data-chart="leaderboard"><svg' in _section(html, "leaderboard")
    assert 'data-chart="dd-hist"><svg' in _section(html, "distributions")
    assert 'data-chart="mae-hist"' not in html


# ------------------------------------------------------------------------- a real browser


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install -y chromium")
def test_chromium_renders_the_page_from_file_url(built: dict[str, Any], tmp_path: Path) -> None:
    from PIL import Image  # matplotlib's own dependency

    url = built["result"].path.absolute().as_uri()
    dom = chromium(tmp_path, "--dump-dom", url).stdout
    for name in SECTIONS:
        assert f'data-section="{name}"' in dom
    # the parsed DOM holds the charts as SVG elements, with their text
    rendered = re.findall(r'<figure data-chart="([^"]+)"><svg', dom)
    written = re.findall(r'data-chart="([^"]+)"', built["result"].path.read_text())
    assert sorted(rendered) == sorted(written)  # every chart the page holds is drawn
    assert {
        "runs-over-time",
        "leaderboard",
        "policies",
        "frontiers",
        "equity",
        "underwater",
        "monthly",
        "rolling-sharpe",
        "dd-hist",
        "mae-hist",
        "run-dd-hist",
        "verdicts",
    } <= set(rendered)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and HOSTILE not in dom

    # no request leaves file:// (the hosts the page's load asks for, beyond those the browser
    # asks for on its own with a blank page, in the same run) and no console message
    def hosts(target: str, name: str) -> set[str]:
        log = tmp_path / f"{name}.netlog.json"
        run = chromium(
            tmp_path / name, "--enable-logging=stderr", f"--log-net-log={log}", "--dump-dom", target
        )
        assert "CONSOLE" not in run.stderr and "Uncaught" not in run.stderr, run.stderr[-2000:]
        return set(re.findall(r'"url":"[a-z]+://([^/":?]+)', log.read_text()))

    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><title>blank</title>")
    assert hosts(url, "page") - hosts(blank.as_uri(), "blank") == set()
    # ... and nothing in the page could ask for one, even a host the blank page asks for too
    # (SVG's xmlns names are identifiers, never fetched)
    html = built["result"].path.read_text()
    fetchable = r'(?:src|href|srcset|action|data)\s*=\s*["\']?\s*(?:https?:)?//|url\(\s*["\']?\s*(?:https?:)?//|@import'
    assert re.findall(fetchable, html, flags=re.I) == []

    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1200,2400", f"--screenshot={shot}", url)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2400)
    # an RGB image: every colour and pixel is an (r, g, b) tuple
    colours = cast("list[tuple[int, tuple[int, ...]]]", img.getcolors(maxcolors=1 << 20) or [])
    assert len(colours) > 50, f"a near-blank screenshot: {len(colours)} colours"
    # the header bar is dark, the page background light, and the charts draw the palette's blue
    assert sum(cast("tuple[int, ...]", img.getpixel((600, 10)))) < 150
    assert sum(cast("tuple[int, ...]", img.getpixel((5, 1200)))) > 600
    blues = sum(n for n, (r, g, b) in colours if b > 150 and r < 60 and 90 < g < 140)
    assert blues > 500, "no chart bars drawn"
