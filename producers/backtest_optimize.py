#!/usr/bin/env python3
"""The optimize backtest producer (its tables are written with DuckDB COPY ... TO).

One run over the synthetic memecoin market, the same as
``quantbot-bus backtest run --strategy optimize``; prints ``<run_id><TAB><run_dir>``::

    python producers/backtest_optimize.py --root artifacts --interval 1m --calls 200 --seed 0

Options: --root DIR (default $QUANTBOT_BUS_ROOT or ./artifacts), --interval 1m|5m,
--from/--to YYYY-MM-DD, --calls N, --seed S, --layout v1|seed; --help for the list.
"""

import sys

from quantbot_bus.backtest.runner import producer_main

if __name__ == "__main__":
    sys.exit(producer_main("optimize"))
