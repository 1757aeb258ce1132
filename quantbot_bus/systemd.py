"""systemd units for quantbot-bus: see :mod:`quantbot_bus.ops.systemd`.

``python -m quantbot_bus.systemd examples DIR`` writes the rendered example units.
"""

import sys

from .ops.systemd import *  # noqa: F403
from .ops.systemd import __all__ as __all__
from .ops.systemd.examples import main
from .ops.systemd.render import _template as _template

if __name__ == "__main__":
    main(sys.argv[1:], prog="python -m quantbot_bus.systemd")
