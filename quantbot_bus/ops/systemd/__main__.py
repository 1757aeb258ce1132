"""``python -m quantbot_bus.ops.systemd examples DIR``: write the rendered example units."""

import sys

from .examples import main

main(sys.argv[1:])
