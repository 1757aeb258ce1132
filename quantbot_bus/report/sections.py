"""The dashboard's sections, each from :class:`~quantbot_bus.report.data.ReportData` to a
:class:`~quantbot_bus.report.page.Section`: its numbers, tables and charts, or a sentence saying
what is not there yet."""

from __future__ import annotations

from . import charts, tearsheet
from .data import TOP_CALLERS, ReportData
from .page import (
    Col,
    Section,
    cards,
    chart,
    empty,
    esc,
    fmt_bool,
    fmt_bps,
    fmt_bytes,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_ts,
    table,
)
from .svg import BAD

NOTHING_PUBLISHED = "nothing published yet: start the daemon (make run) or run `quantbot-bus sync`"


def overview(d: ReportData) -> Section:
    s, st = d.stats, d.status or {}
    items = [
        (fmt_int(s.get("runs", 0)), "live runs"),
        (fmt_int(s.get("deleted", 0)), "deleted runs"),
        (fmt_int(s.get("artifacts", 0)), "artifacts"),
        (fmt_int(s.get("total_rows", 0)), "rows"),
        (fmt_bytes(s.get("total_bytes", 0)), "data"),
        (fmt_int(d.rejected), "open rejections"),
        (fmt_int(st.get("pending")) if d.status else "—", "pending runs"),
        (esc(st.get("state")) if d.status else "—", "daemon"),
    ]
    body = [cards(items)]
    if not d.published:
        body.append(empty(NOTHING_PUBLISHED))
    elif not s.get("runs"):
        body.append(empty("no runs yet"))
    else:
        body.append(
            f'<p class="note">first run {fmt_ts(s.get("first_run"))}, newest '
            f"{fmt_ts(s.get('last_run'))}</p>"
        )
        body.append(
            chart(
                charts.runs_over_time(d.runs_per_day),
                "runs-over-time",
                "runs over time, by run type",
            )
        )
        body.append(
            table(
                (
                    Col("run_type", "run type"),
                    Col("runs", "runs", fmt_int, True),
                    Col("total_rows", "rows", fmt_int, True),
                    Col("last_run", "newest", fmt_ts),
                ),
                d.by_type,
                name="run-types",
            )
        )
    return Section("overview", "Catalog", "".join(body))


#: What a summary section says on the Iceberg backend, which does not compute the summaries.
NOT_ON_ICEBERG = (
    'not computed on the scale-out backend (catalog = "iceberg"): the caller leaderboard, policy '
    "comparison, frontiers, run summaries and regression checks are exports of the local bus "
    "(docs/scale-out.md)"
)


def leaderboard(d: ReportData) -> Section:
    if not d.summaries:
        return Section("leaderboard", "Caller leaderboard", empty(NOT_ON_ICEBERG))
    if not d.leaderboard:
        return Section(
            "leaderboard",
            "Caller leaderboard",
            empty("no path-only runs yet (no caller statistics)"),
        )
    cols = (
        Col("caller_name", "caller"),
        Col("calls", "calls", fmt_int, True),
        Col("hit_2x_rate", "hit 2x", fmt_pct, True),
        Col("hit_3x_rate", "hit 3x", fmt_pct, True),
        Col("hit_4x_rate", "hit 4x", fmt_pct, True),
        Col("median_peak_multiple", "median peak", lambda v: fmt_num(v, 2), True),
        Col("p90_peak_multiple", "p90 peak", lambda v: fmt_num(v, 2), True),
        Col("median_dd_bps", "median dd (bps)", fmt_bps, True),
        Col("runs_seen", "runs", fmt_int, True),
    )
    note = f'<p class="note">top {min(TOP_CALLERS, d.callers)} of {fmt_int(d.callers)} callers by 2x hit rate</p>'
    body = note + chart(
        charts.leaderboard(d.leaderboard), "leaderboard", "hit rates of the top callers"
    )
    return Section(
        "leaderboard", "Caller leaderboard", body + table(cols, d.leaderboard, name="leaderboard")
    )


def policies(d: ReportData) -> Section:
    if not d.summaries:
        return Section("policies", "Policy comparison", empty(NOT_ON_ICEBERG))
    if not d.policies:
        return Section("policies", "Policy comparison", empty("no policy runs yet"))
    cols = (
        Col("policy_id", "policy"),
        Col("runs", "runs", fmt_int, True),
        Col("trades", "trades", fmt_int, True),
        Col("avg_return_bps", "avg return (bps)", fmt_bps, True),
        Col("median_return_bps", "median return (bps)", fmt_bps, True),
        Col("win_rate", "win rate", fmt_pct, True),
        Col("stop_out_rate", "stop-out", fmt_pct, True),
    )
    body = (
        f'<p class="note">{fmt_int(d.policy_runs)} policy runs; each policy over all of them, '
        "weighted by trades (best average return first)</p>"
        + chart(charts.policies(d.policies), "policies", "policies side by side")
        + table(cols, d.policies, name="policies")
    )
    return Section("policies", "Policy comparison", body)


def frontiers(d: ReportData) -> Section:
    if not d.summaries:
        return Section("frontiers", "Optimization frontiers", empty(NOT_ON_ICEBERG))
    if not d.frontier:
        return Section("frontiers", "Optimization frontiers", empty("no optimize runs yet"))
    pareto = [r for r in d.frontier if r["pareto"]]
    cols = (
        Col("kind", "kind"),
        Col("caller_name", "caller"),
        Col("rank", "rank", fmt_int, True),
        Col("objective_score", "objective", lambda v: fmt_num(v, 1), True),
        Col("avg_return_bps", "avg return (bps)", fmt_bps, True),
        Col("stop_out_rate", "stop-out", fmt_pct, True),
        Col("meets_constraints", "meets constraints", fmt_bool),
        Col("policy_params", "params", wrap=True),
    )
    body = (
        f'<p class="note">newest optimize run <code>{esc(d.frontier_run)}</code>: '
        f"{fmt_int(len(d.frontier))} frontier rows, {fmt_int(len(pareto))} on the Pareto set</p>"
        + chart(
            charts.frontiers(d.frontier),
            "frontiers",
            "objective against stop-out rate; Pareto set highlighted",
        )
        + "<h3>Pareto set</h3>"
        + table(cols, pareto, name="pareto", scroll=True)
    )
    if d.frontier_best:
        best_cols = (
            Col("caller_name", "caller"),
            Col("objective_score", "objective", lambda v: fmt_num(v, 1), True),
            Col("avg_return_bps", "avg return (bps)", fmt_bps, True),
            Col("stop_out_rate", "stop-out", fmt_pct, True),
            Col("policy_params", "params", wrap=True),
        )
        body += "<h3>Best constrained policy per caller</h3>" + table(
            best_cols, d.frontier_best, name="frontier-best", scroll=True
        )
    return Section("frontiers", "Optimization frontiers", body)


def run_tearsheet(d: ReportData) -> Section:
    if d.tearsheet is None:
        return Section("tearsheet", "Run tearsheet", empty(d.tearsheet_note))
    view = tearsheet.build(d.tearsheet)
    st = view.stats
    total = st["total_return_bps"] or 0.0
    items = [
        (fmt_int(st["calls"]), "calls"),
        (
            f'<span class="{"good" if total >= 0 else "bad"}">{fmt_bps(total)}</span>',
            "total return (bps)",
        ),
        (fmt_num(st["avg_return_bps"], 1), "avg return (bps)"),
        (fmt_pct(st["win_rate"]), "win rate"),
        (f'<span class="bad">{fmt_bps(st["max_drawdown_bps"])}</span>', "max drawdown (bps)"),
        (fmt_num(st["sharpe_per_call"], 3), "Sharpe per call"),
    ]
    body = [
        f'<p class="note">run <code>{esc(view.run_id)}</code>, created {fmt_ts(view.created_at)} '
        "(the newest policy run unless <code>--run</code> picks one)</p>",
        cards(items),
        chart(
            view.charts["equity"],
            "equity",
            "cumulative return path (backtest_call_results.return_bps)",
        ),
        chart(view.charts["underwater"], "underwater", "drawdown below the running peak"),
        chart(view.charts["monthly"], "monthly", "monthly returns heatmap"),
    ]
    if "rolling-sharpe" in view.charts:
        body.append(chart(view.charts["rolling-sharpe"], "rolling-sharpe", "rolling Sharpe ratio"))
    else:
        body.append(empty("too few calls for a rolling Sharpe ratio (fewer than 10)"))
    return Section("tearsheet", "Run tearsheet", "".join(body))


def distributions(d: ReportData) -> Section:
    figs = []
    if d.dd_hist:
        figs.append(
            chart(
                charts.histogram(
                    d.dd_hist, "dd-hist", "dd_bps (max drawdown after the alert)", BAD
                ),
                "dd-hist",
                f"per-call drawdown, {fmt_int(d.dd_hist.n)} calls (backtest_call_path_metrics)",
            )
        )
    if d.mae_hist:
        figs.append(
            chart(
                charts.histogram(d.mae_hist, "mae-hist", "max_adverse_excursion_bps"),
                "mae-hist",
                f"max adverse excursion, {fmt_int(d.mae_hist.n)} trades (backtest_policy_results)",
            )
        )
    if d.run_dd_hist:
        figs.append(
            chart(
                charts.histogram(d.run_dd_hist, "run-dd-hist", "max_drawdown_bps per run"),
                "run-dd-hist",
                f"worst drawdown per run, {fmt_int(d.run_dd_hist.n)} runs (run_summaries)",
            )
        )
    if not figs:
        return Section(
            "distributions",
            "Drawdown and MAE distributions",
            empty("no path-only or policy runs yet"),
        )
    note = (
        '<p class="note">bins span the 0.5–99.5 % quantiles; the outermost bins hold the tails</p>'
    )
    if not d.summaries:  # the worst drawdown per run comes from the run summaries
        note += f'<p class="note">worst drawdown per run: {esc(NOT_ON_ICEBERG)}</p>'
    return Section(
        "distributions",
        "Drawdown and MAE distributions",
        note + f'<div class="row">{"".join(figs)}</div>',
    )


def regressions(d: ReportData) -> Section:
    body = ["<h3>Open alerts</h3>"]
    if d.alerts:
        body.append(
            table(
                (
                    Col("severity", "severity"),
                    Col("rule", "rule"),
                    Col("key", "condition"),
                    Col("first_seen_at", "since"),
                    Col("last_seen_at", "last seen"),
                    Col("message", "message", wrap=True),
                ),
                d.alerts,
                name="alerts",
                scroll=True,
            )
        )
    else:
        body.append(empty("no open alerts"))
    body.append("<h3>Regression checks</h3>")
    if not d.summaries:
        body.append(empty(NOT_ON_ICEBERG))
    elif d.regressions is None:
        body.append(empty("no regression checks yet"))
    else:
        if d.verdicts:
            body.append(
                chart(charts.verdicts(d.verdicts), "verdicts", "regression checks by verdict")
            )
        if d.regressions:
            cols = (
                Col("created_at", "when", fmt_ts),
                Col("run_id", "run"),
                Col("metric", "metric"),
                Col("verdict", "verdict"),
                Col("baseline_value", "baseline", lambda v: fmt_num(v, 2), True),
                Col("new_value", "new", lambda v: fmt_num(v, 2), True),
                Col("change", "change", lambda v: fmt_num(v, 2), True),
                Col("low", "low", lambda v: fmt_num(v, 2), True),
                Col("high", "high", lambda v: fmt_num(v, 2), True),
                Col("reason", "reason", wrap=True),
            )
            body.append(table(cols, d.regressions, name="regressions", scroll=True))
        else:
            body.append(empty("no regressions or improvements: every check says no change"))
    return Section("regressions", "Regressions and alerts", "".join(body))


def rejected(d: ReportData) -> Section:
    body = ["<h3>Pending runs</h3>"]
    if d.status is None and d.pending is not None:  # no daemon: what the last sync found
        ages = [r["age_s"] for r in d.pending.get("runs", []) if r.get("age_s") is not None]
        oldest = f"; the oldest seen {fmt_num(max(ages), 0)} s ago" if ages else ""
        body.append(
            f"<p>{fmt_int(d.pending.get('total', 0))} runs pending (metadata.json written, files "
            f"not complete){oldest}, as the last {esc(d.pending.get('writer'))} found them at "
            f"{esc(d.pending.get('updated_at'))}; no daemon runs (a sync keeps the catalog "
            "fresh)</p>"
        )
    elif d.status is None:
        body.append(empty(f"no daemon status: {d.status_note}"))
    else:
        st = d.status
        lag = st.get("oldest_pending_lag_s")
        body.append(
            f"<p>{fmt_int(st.get('pending', 0))} runs pending (metadata.json written, files not "
            f"complete){'' if lag is None else f'; the oldest seen {fmt_num(lag, 0)} s ago'}; "
            f"daemon {esc(st.get('state'))}, status written {esc(st.get('updated_at'))}</p>"
        )
    body.append(f"<h3>Rejected runs ({fmt_int(d.rejected)} open)</h3>")
    if d.rejections:
        cols = (
            Col("run_dir", "run directory", wrap=True),
            Col("run_id", "run id"),
            Col("reason", "reason", wrap=True),
            Col("attempts", "attempts", fmt_int, True),
            Col("first_seen_at", "first seen", fmt_ts),
            Col("last_seen_at", "last seen", fmt_ts),
        )
        if d.rejected > len(d.rejections):
            body.append(f'<p class="note">the newest {len(d.rejections)} shown</p>')
        body.append(table(cols, d.rejections, name="rejections", scroll=True))
    else:
        body.append(empty("no open rejections"))
    return Section("rejected", "Rejected and pending runs", "".join(body))


def all_sections(d: ReportData) -> list[Section]:
    """Every section, in page order."""
    return [
        overview(d),
        leaderboard(d),
        policies(d),
        frontiers(d),
        run_tearsheet(d),
        distributions(d),
        regressions(d),
        rejected(d),
    ]
