"""Query the quantbot-bus exports with plain DuckDB: recent runs, best callers, policy comparison.

Usage: python examples/query_catalog.py [EXPORTS_DIR]   (default ./exports)
Reads only the publication (exports/bus.duckdb: views over immutable Parquet files), so it never
blocks the daemon, and the connection sees one published generation for as long as it is open.
"""

import sys
from pathlib import Path

import duckdb

exports = Path(sys.argv[1] if len(sys.argv) > 1 else "exports")
con = duckdb.connect(str(exports / "bus.duckdb"), read_only=True)
con.execute("USE bus.exports")  # runs, run_summaries, caller_leaderboard, policy_comparison

print("== recent runs")
con.sql("""SELECT run_id, run_type, status, created_at, git_branch, total_calls, total_trades,
                  round(avg_return_bps, 1) AS avg_return_bps
           FROM runs LEFT JOIN run_summaries USING (run_id, run_type, created_at)
           ORDER BY created_at DESC, run_id DESC LIMIT 10""").show()

print("== best callers (at least 20 calls)")
con.sql("""SELECT caller_name, calls, round(hit_2x_rate, 3) AS hit_2x, round(hit_4x_rate, 3) AS hit_4x,
                  round(median_peak_multiple, 2) AS median_peak, round(p90_peak_multiple, 2) AS p90_peak,
                  round(median_dd_bps) AS median_dd_bps, runs_seen
           FROM caller_leaderboard WHERE calls >= 20
           ORDER BY hit_2x_rate DESC, calls DESC LIMIT 10""").show()

print("== policies, averaged over runs")
con.sql("""SELECT policy_id, count(*) AS runs, sum(trades) AS trades,
                  round(sum(avg_realized_return_bps * trades) / sum(trades), 1) AS avg_return_bps,
                  round(avg(median_realized_return_bps), 1) AS median_return_bps,
                  round(sum(stop_out_rate * trades) / sum(trades), 3) AS stop_out_rate,
                  round(sum(win_rate * trades) / sum(trades), 3) AS win_rate
           FROM policy_comparison GROUP BY policy_id ORDER BY avg_return_bps DESC""").show()
