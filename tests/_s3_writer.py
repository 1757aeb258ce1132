"""A producer process for the scale-out tests: uploads runs with RunWriter to an s3:// root.

    python tests/_s3_writer.py ROOT TAG N

Writes ``N`` backtest runs ``<TAG>-<i>`` (i = 0..N-1), each with a ``trades`` table that carries
its run id (registered in place) and a ``fills`` table that does not (rewritten on
registration). Credentials come from the AWS_* environment.
"""

from __future__ import annotations

import sys

import pyarrow as pa

from quantbot_bus.writer import RunWriter


def main() -> None:
    root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        run_id = f"{tag}-{i:05d}"
        with RunWriter(root, "backtest", run_id=run_id, git=None, params={"i": i}) as w:
            w.write_table("trades", pa.table({"run_id": [run_id] * 3, "pnl": [0.1 * i, 0.2, -0.1]}))
            w.write_table("fills", pa.table({"qty": [1, 2], "px": [10.0, 11.5]}))
            w.set_metrics(sharpe=0.01 * i)


if __name__ == "__main__":
    main()
