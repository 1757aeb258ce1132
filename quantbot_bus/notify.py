"""Re-exports of :mod:`quantbot_bus.daemon.notify` under the old import path."""

from .daemon.notify import Notifier

__all__ = ["Notifier"]
