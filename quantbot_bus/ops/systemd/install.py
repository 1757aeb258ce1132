"""Installing and removing the systemd units: which config the service runs with, the unit
directory, writing the rendered units (only over files we wrote), creating the data directories,
and the ``systemctl`` calls. Any failing ``systemctl`` call raises
:class:`~quantbot_bus.errors.InstallError` with the command and its stderr."""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...config import CONFIG_ENV, DEFAULT_CONFIG_NAME, Config, find_config_file, load_config
from ...errors import ConfigError, InstallError
from ...fsutil import write_atomic
from .access import access_problems
from .interval import DEFAULT_SYNC_INTERVAL_MIN, installed_interval, parse_interval
from .render import (
    DAEMON_UNIT,
    DEFAULT_MEMORY_MAX,
    MARKER,
    SYNC_UNIT,
    TIMER_UNIT,
    UNIT_NAMES,
    UnitContext,
    build_context,
    render_units,
)

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True)
class UnitFile:
    """One unit: its name, its path in the unit directory and its content."""

    name: str
    path: Path
    content: str


@dataclass
class InstallResult:
    """What install/uninstall did (or, with ``dry_run``, would do)."""

    dry_run: bool
    units: list[UnitFile] = field(default_factory=list)  # written (install) / removed (uninstall)
    created_dirs: list[Path] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)  # systemctl calls, in order
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_unit_dir(user: bool, env: Mapping[str, str] | None = None) -> Path:
    """``/etc/systemd/system``, or ``$XDG_CONFIG_HOME/systemd/user`` (``~/.config/...``) for --user."""
    if not user:
        return SYSTEM_UNIT_DIR
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "systemd" / "user"


def resolve_config_path(
    path: str | os.PathLike[str] | None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """The config file the service will use: ``path``, ``$QUANTBOT_BUS_CONFIG`` or ./quantbot-bus.toml."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    chosen = find_config_file(path, env=env, cwd=cwd)
    if chosen is None:
        raise ConfigError(
            "the service needs a config file: pass --config PATH (a TOML file naming root, "
            f"state_dir and exports_dir), set ${CONFIG_ENV}, or create ./{DEFAULT_CONFIG_NAME}"
        )
    if not chosen.is_file():
        raise ConfigError(f"config file {chosen} does not exist")
    return Path(os.path.normpath(chosen))


def load_service_config(config_path: Path) -> Config:
    """Load the config exactly as the service will see it.

    The service gets no ``QUANTBOT_BUS_*`` environment and runs in the config file's directory
    (``WorkingDirectory=``), so the shell's environment is ignored and relative defaults resolve
    against the file's directory.
    """
    return load_config(config_path, env={}, cwd=config_path.parent)


def _systemctl_base(systemctl: Sequence[str], user: bool) -> list[str]:
    return [*systemctl, "--user"] if user else list(systemctl)


def _run(cmd: list[str], *, context: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except FileNotFoundError:
        raise InstallError(
            f"`{shlex.join(cmd)}` failed: {cmd[0]} not found (is systemd installed? "
            f"--dry-run prints the units without running anything){context}"
        ) from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"`{shlex.join(cmd)}` did not finish in 300 s{context}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or "(no output)"
        raise InstallError(
            f"`{shlex.join(cmd)}` failed (exit {proc.returncode}): {detail}{context}"
        )


def _ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return MARKER in fh.readline()
    except OSError:
        return False


def _plan_install(
    ctx: UnitContext,
    unit_dir: Path,
    base: list[str],
    *,
    timer: bool,
    dry_run: bool,
    interval_given: bool = True,
) -> InstallResult:
    """The units, missing data directories, systemctl calls, warnings and notes of an install.

    With ``timer`` over an existing timer unit, the timer is also restarted, so a new period
    applies at once (``enable --now`` leaves a running timer alone).
    """
    result = InstallResult(dry_run=dry_run)
    result.units = [UnitFile(n, unit_dir / n, c) for n, c in render_units(ctx).items()]
    dirs = (ctx.root, ctx.state_dir, ctx.exports_dir)
    result.created_dirs = [d for d in dirs if not d.exists()]
    enable, other = (TIMER_UNIT, DAEMON_UNIT) if timer else (DAEMON_UNIT, TIMER_UNIT)
    result.commands = [
        [*base, "daemon-reload"],
        [*base, "disable", "--now", other],
        [*base, "enable", "--now", enable],
    ]
    old_timer = unit_dir / TIMER_UNIT
    if timer and old_timer.exists():
        result.commands.append([*base, "restart", TIMER_UNIT])
        old = installed_interval(old_timer.read_text(encoding="utf-8", errors="replace"))
        if (
            _ours(old_timer)
            and not interval_given
            and old is not None
            and old != ctx.sync_interval_min
        ):
            result.warnings.append(
                f"the installed timer ran the sync every {old} min; without --interval it now "
                f"runs every {ctx.sync_interval_min} min (pass --interval {old} to keep {old})"
            )
    if ctx.run_as == "root":
        result.warnings.append(
            "the service will run as root (the owner of the state directory or config): pass "
            "--run-as USER to run it as an unprivileged user"
        )
    if ctx.private_tmp == "no":
        result.warnings.append(
            ctx.private_tmp_reason + " systemd-tmpfiles also cleans /tmp: move the bus elsewhere "
            "for a service that runs for months"
        )
    if ctx.user:
        result.notes.append(
            "user services stop at logout unless lingering is on: loginctl enable-linger "
            + (os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name)
        )
    return result


def _write_units(units: list[UnitFile], unit_dir: Path, user: bool) -> None:
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        for unit in units:
            write_atomic(unit.path, unit.content, mode=0o644)
    except OSError as exc:
        hint = "" if user else " (run it as root, or install a user service with --user)"
        raise InstallError(f"cannot write units to {unit_dir}: {exc}{hint}") from None


def _create_dirs(dirs: list[Path], run_as: str | None) -> None:
    """Create the data directories, owned by ``run_as`` when we are root."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            if run_as is not None and os.geteuid() == 0:
                try:
                    entry = pwd.getpwnam(run_as)
                except KeyError:
                    raise InstallError(
                        f"user {run_as!r} does not exist: create it or pass --run-as"
                    ) from None
                os.chown(d, entry.pw_uid, entry.pw_gid)
        except OSError as exc:
            raise InstallError(f"cannot create {d}: {exc}") from None


def install(
    config_path: Path,
    *,
    user: bool = False,
    unit_dir: Path | None = None,
    systemctl: Sequence[str] = ("systemctl",),
    dry_run: bool = False,
    executable: Path | None = None,
    run_as: str | None = None,
    memory_max: str = DEFAULT_MEMORY_MAX,
    timer: bool = False,
    force: bool = False,
    interval: int | str | None = None,
) -> InstallResult:
    """Render the units for ``config_path``, write them to ``unit_dir``, reload and enable.

    Enables ``quantbot-bus.service`` (or, with ``timer``, ``quantbot-bus-sync.timer``) with
    ``--now`` and disables the other, so exactly one of them runs. ``interval`` (minutes, only
    with ``timer``; default 5) is the timer's ``OnUnitActiveSec=``; re-installing the timer
    restarts it. Creates the artifacts root and
    the state and exports directories when missing (``ReadOnlyPaths=``/``ReadWritePaths=`` need
    them to exist), owned by the service user when run as root. Before writing anything it
    checks that the service user can execute the executable and its interpreter and read the
    config (:func:`.access.access_problems`): if not, :class:`InstallError` names the path that
    blocks. With ``dry_run`` nothing is written or run; the result says what would be (and
    those problems are warnings).
    """
    if interval is not None and not timer:
        raise ConfigError(
            "--interval sets how often the sync timer runs and needs --timer: the daemon "
            f"({DAEMON_UNIT}, installed without --timer) watches the root continuously and has "
            "no interval"
        )
    minutes = DEFAULT_SYNC_INTERVAL_MIN if interval is None else parse_interval(interval)
    config = load_service_config(config_path)
    ctx = build_context(
        config,
        config_path,
        user=user,
        executable=executable,
        run_as=run_as,
        memory_max=memory_max,
        sync_interval_min=minutes,
    )
    unit_dir = default_unit_dir(user) if unit_dir is None else Path(unit_dir)
    base = _systemctl_base(systemctl, user)
    result = _plan_install(
        ctx, unit_dir, base, timer=timer, dry_run=dry_run, interval_given=interval is not None
    )
    clobber = [u.path for u in result.units if u.path.exists() and not _ours(u.path)]
    if clobber and not force:
        raise InstallError(
            f"{clobber[0]} exists and was not written by quantbot-bus: move it away, or pass "
            "--force to overwrite it"
        )
    problems = access_problems(ctx)
    if dry_run:
        result.warnings.extend(problems)
        return result
    if problems:
        raise InstallError("; and ".join(problems) + " (no unit was written)")
    _write_units(result.units, unit_dir, user)
    _create_dirs(result.created_dirs, ctx.run_as)
    context = f" (the units are in {unit_dir}; fix this and run install again)"
    for cmd in result.commands:
        _run(cmd, context=context)
    return result


def uninstall(
    *,
    user: bool = False,
    unit_dir: Path | None = None,
    systemctl: Sequence[str] = ("systemctl",),
    dry_run: bool = False,
) -> InstallResult:
    """Stop and disable the installed units, remove their files, reload. Data is never touched.

    Only files carrying :data:`MARKER` are removed; with none installed it does nothing.
    """
    unit_dir = default_unit_dir(user) if unit_dir is None else Path(unit_dir)
    result = InstallResult(dry_run=dry_run)
    present = [unit_dir / n for n in UNIT_NAMES if (unit_dir / n).exists()]
    foreign = [p for p in present if not _ours(p)]
    if foreign:
        raise InstallError(
            f"{foreign[0]} was not written by quantbot-bus install: remove it by hand if you "
            "mean to"
        )
    if not present:
        result.notes.append(f"no quantbot-bus units in {unit_dir}: nothing to do")
        return result
    result.units = [UnitFile(p.name, p, p.read_text(encoding="utf-8")) for p in present]
    base = _systemctl_base(systemctl, user)
    names = [p.name for p in present]
    enabled = [n for n in names if n in (DAEMON_UNIT, TIMER_UNIT)]
    if enabled:
        result.commands.append([*base, "disable", "--now", *enabled])
    if SYNC_UNIT in names:
        result.commands.append([*base, "stop", SYNC_UNIT])
    result.commands.append([*base, "daemon-reload"])
    if dry_run:
        return result
    *before, reload = result.commands
    for cmd in before:
        _run(cmd, context="")
    for p in present:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InstallError(f"cannot remove {p}: {exc}") from None
    _run(reload, context="")
    return result
