"""Plug-in summaries: what a summary export computes, and the registry the exports iterate.

The exports core (segments, the catalog summaries ``runs``, ``artifacts``,
``latest_artifacts``, files, views) knows no artifact table by name. A plug-in describes each
further summary as a :class:`Summary` — the artifact tables it reads, the state tables and
per-run partials it keeps, the runs that feed it, the SELECT its view ``exports.<name>`` and
its file ``<name>.parquet`` hold — and registers it with :func:`register` when its module is
imported. The default :data:`REGISTRY` imports its plug-in modules (:data:`PLUGIN_MODULES`)
the first time it is read, so every caller of the exports sees the same summaries whatever it
imported before, and a process that never reads them (the ``query`` path) never loads them.

Hooks run inside the refresh transaction, on the working catalog. Temp table ``_qb_new``
(``run_id``) holds the runs coming in, ``_qb_gone`` the runs going out (deleted, or the old
version of an updated run). ``remove`` runs first, while the leaving runs' partials and their
rows in the segments are still there (subtract them from running totals); then their rows in
``run_tables`` are deleted; ``compute`` adds the incoming runs' partials from their staged rows
(it gets the bus's :class:`~quantbot_bus.config.Config` too, for a plug-in's settings).
Changing a plug-in's state tables or flags needs a new
:data:`quantbot_bus.exports.state.STATE_VERSION` (the state is then rebuilt).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .summaries import CATALOG_SQL

if TYPE_CHECKING:
    import duckdb

    from ..config import Config

#: The modules that register the default summaries (imported on first use): the exports core's
#: own ``schema_conflicts`` (:mod:`quantbot_bus.exports.evolution`), then the backtest plug-in.
PLUGIN_MODULES = ("quantbot_bus.exports.evolution", "quantbot_bus.backtest.summaries")


@dataclass(frozen=True)
class Staged:
    """The rows of one artifact table of the runs coming in: ``relation`` (a temp table,
    ``run_id`` first) with ``columns``."""

    relation: str
    columns: list[str]


@dataclass(frozen=True)
class Flag:
    """A BOOLEAN column ``column`` of ``exports_state.runs``: whether a run feeds a summary.
    ``sql`` computes it for an incoming run, an aggregate over its artifacts ``f`` (``f.name``
    the artifact table) with the bound ``params``."""

    column: str
    sql: str
    params: Mapping[str, str] = field(default_factory=dict)


ComputeHook = Callable[["duckdb.DuckDBPyConnection", Mapping[str, Staged], "Config"], None]
RemoveHook = Callable[["duckdb.DuckDBPyConnection", Path], None]


@dataclass(frozen=True)
class Summary:
    """A summary export ``exports.<name>`` computed from the export state.

    ``sql``: the SELECT over the state its view runs and its file holds. ``tables``: the
    artifact tables it reads (``compute`` gets the staged rows of these). ``feed``: the runs
    whose arrival or departure change it (``None``: every run). ``state_ddl``: the
    ``CREATE TABLE IF NOT EXISTS exports_state.<t>`` of its state; ``run_tables``: those of its
    state tables keyed by ``run_id`` (a leaving run's rows are deleted). ``compute(con,
    staged)`` and ``remove(con, exports_dir)``: the hooks (module docstring)."""

    name: str
    sql: str
    tables: tuple[str, ...] = ()
    feed: Flag | None = None
    state_ddl: str = ""
    run_tables: tuple[str, ...] = ()
    compute: ComputeHook | None = None
    remove: RemoveHook | None = None


class Registry:
    """The plug-in summaries, in registration order; ``plugins`` are imported on first read."""

    def __init__(self, plugins: Sequence[str] = ()) -> None:
        self._plugins = tuple(plugins)
        self._summaries: dict[str, Summary] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, *summaries: Summary) -> None:
        """Add ``summaries`` (registering the same one again is a no-op)."""
        with self._lock:
            for summary in summaries:
                taken = self._summaries.get(summary.name)
                if summary.name in CATALOG_SQL or (taken is not None and taken != summary):
                    raise ValueError(f"a summary named {summary.name!r} is registered already")
                self._summaries[summary.name] = summary

    def summaries(self) -> tuple[Summary, ...]:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    for module in self._plugins:
                        importlib.import_module(module)
                    self._loaded = True
        return tuple(self._summaries.values())


REGISTRY = Registry(PLUGIN_MODULES)
register = REGISTRY.register


def summaries() -> tuple[Summary, ...]:
    """The plug-in summaries of the default registry."""
    return REGISTRY.summaries()


def summary_sql() -> dict[str, str]:
    """Every summary export's SELECT by name: the catalog summaries, then the plug-ins'."""
    return {**CATALOG_SQL, **{s.name: s.sql for s in summaries()}}


def summary_names() -> tuple[str, ...]:
    """Every summary export's name: the catalog summaries, then the plug-ins'."""
    return tuple(summary_sql())


def flags() -> tuple[Flag, ...]:
    """The run flags of the plug-in summaries (columns of ``exports_state.runs``, in order)."""
    return tuple(s.feed for s in summaries() if s.feed is not None)
