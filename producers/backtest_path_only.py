#!/usr/bin/env python3
"""The path-only backtest producer (its tables are written with polars).

One run over the synthetic memecoin market, the same as
``quantbot-bus backtest run --strategy path-only``; prints ``<run_id><TAB><run_dir>``::

    python producers/backtest_path_only.py --root artifacts --interval 1m --calls 200 --seed 0

Options: --root DIR (default $QUANTBOT_BUS_ROOT or ./artifacts), --interval 1m|5m,
--from/--to YYYY-MM-DD, --calls N, --seed S, --layout v1|seed; --help for the list.
"""

import sys

from quantbot_bus.backtest.runner import producer_main

if __name__ == "__main__":
    sys.exit(producer_main("path-only"))
