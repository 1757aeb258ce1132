"""Export views under ``exports/`` (issue 4). Placeholder until the exports module lands.

INTERFACE: ``refresh(config, con) -> dict[str, Any]`` — ``con`` is a cursor on the daemon's working
catalog; writes every export atomically and returns the status written to
``exports/_export_status.json``. Never raises for a failing export (it is reported in the status).
"""

from __future__ import annotations

from typing import Any

import duckdb

from .config import Config


def refresh(config: Config, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """No exports yet beyond the catalog snapshot: nothing to do."""
    return {}
