"""``python -m quantbot_bus.cli``: the same command line as the ``quantbot-bus`` script."""

from . import main

main()
