"""``quantbot-bus doctor``'s checks: see :mod:`quantbot_bus.ops.doctor`."""

from .ops.doctor import *  # noqa: F403
from .ops.doctor import __all__ as __all__
