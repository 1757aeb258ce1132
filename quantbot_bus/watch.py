"""Re-exports of :mod:`quantbot_bus.daemon` under the old import path."""

from .daemon import IDLE_TICK_S
from .daemon.observer import EVENT_FILTER, OBSERVER_RESTART_WINDOW_S, OVERFLOW_LOGGER
from .daemon.supervisor import Daemon, install_signal_handlers, run_daemon

__all__ = [
    "EVENT_FILTER",
    "IDLE_TICK_S",
    "OBSERVER_RESTART_WINDOW_S",
    "OVERFLOW_LOGGER",
    "Daemon",
    "install_signal_handlers",
    "run_daemon",
]
