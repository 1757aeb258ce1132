"""systemd units for quantbot-bus: render them with the real paths, install and uninstall them.

The canonical templates are package data in ``quantbot_bus/units/`` (``string.Template``
placeholders such as ``${exec}``, ``${config}``, ``${state_dir}``, ``${exports_dir}``,
``${root}``); the sandbox block shared by both services is ``units/hardening.conf``. The files in
the repository's ``systemd/`` directory are these templates rendered for an example layout
(:mod:`.examples`; a test keeps them in step).

Units:

- ``quantbot-bus.service``: the daemon (``Type=notify``, watchdog, restart on failure, sandboxed).
- ``quantbot-bus-sync.service`` + ``quantbot-bus-sync.timer``: ``quantbot-bus sync`` every N
  minutes (``OnUnitActiveSec=``, :mod:`.interval`; default 5) and 5 minutes after boot, for hosts
  where a long-running watcher is not wanted. The daemon unit ``Conflicts=`` the timer: exactly
  one of the two writes the working catalog.

Two variants: the system one (``/etc/systemd/system``, ``User=`` the owner of the bus) and the
user one (``systemctl --user``, ``~/.config/systemd/user``), which drops the directives a per-user
service manager does not support (:data:`SYSTEM_ONLY`).

:mod:`.render` turns a config into unit texts; :mod:`.install` writes or removes them and runs
``systemctl``. :func:`install` and :func:`uninstall` take the unit directory and the ``systemctl``
command as parameters, so they can run against a temporary directory and a stub command.
"""

from .examples import EXAMPLE_CONFIG, EXAMPLE_EXECUTABLE, example_units, write_examples
from .install import (
    SYSTEM_UNIT_DIR,
    InstallResult,
    UnitFile,
    default_unit_dir,
    install,
    load_service_config,
    resolve_config_path,
    uninstall,
)
from .interval import (
    DEFAULT_SYNC_INTERVAL_MIN,
    MAX_SYNC_INTERVAL_MIN,
    installed_interval,
    parse_interval,
)
from .render import (
    DAEMON_UNIT,
    DEFAULT_MEMORY_MAX,
    HEADER,
    HOME_TREES,
    MARKER,
    SYNC_UNIT,
    SYSTEM_ONLY,
    TIMER_UNIT,
    TMP_TREES,
    UNIT_NAMES,
    UnitContext,
    build_context,
    default_run_as,
    find_executable,
    needed_paths,
    render_units,
    sandbox_choices,
    sandboxed_context,
)

__all__ = [
    "DAEMON_UNIT",
    "DEFAULT_MEMORY_MAX",
    "DEFAULT_SYNC_INTERVAL_MIN",
    "EXAMPLE_CONFIG",
    "EXAMPLE_EXECUTABLE",
    "HEADER",
    "HOME_TREES",
    "MARKER",
    "MAX_SYNC_INTERVAL_MIN",
    "SYNC_UNIT",
    "SYSTEM_ONLY",
    "SYSTEM_UNIT_DIR",
    "TIMER_UNIT",
    "TMP_TREES",
    "UNIT_NAMES",
    "InstallResult",
    "UnitContext",
    "UnitFile",
    "build_context",
    "default_run_as",
    "default_unit_dir",
    "example_units",
    "find_executable",
    "install",
    "installed_interval",
    "load_service_config",
    "needed_paths",
    "parse_interval",
    "render_units",
    "resolve_config_path",
    "sandbox_choices",
    "sandboxed_context",
    "uninstall",
    "write_examples",
]
