"""One exception hierarchy for quantbot-bus, mapped to process exit codes in one place.

Every error a user can cause or fix derives from :class:`BusError`; the CLI turns it into
a one-line message on stderr and the exit code from :data:`EXIT_CODES`.
"""

from __future__ import annotations


class BusError(Exception):
    """Base class: an error with a message a person can act on."""

    exit_code = 1


class ConfigError(BusError):
    """The configuration (TOML file, environment or flags) is invalid; names the bad field."""

    exit_code = 2


class ContractError(BusError):
    """A run directory or metadata.json breaks the run contract (docs/contract.md)."""

    exit_code = 3


class CatalogError(BusError):
    """The catalog cannot be opened, migrated or written."""

    exit_code = 4


class CatalogMissingError(CatalogError):
    """Nothing is published yet (the daemon or `sync` has never published the catalog)."""

    exit_code = 4


class NotFoundError(BusError):
    """A run, artifact or table that was asked for does not exist."""

    exit_code = 5


class QueryError(BusError):
    """A user query failed (bad SQL, missing table)."""

    exit_code = 6


class DaemonError(BusError):
    """The daemon could not start or keep running (observer died, lock held...)."""

    exit_code = 7


class BusyError(BusError):
    """The catalog is held by another quantbot-bus process (a daemon, a sync, a rebuild)."""

    exit_code = 10


class InstallError(BusError):
    """Installing or removing systemd units failed."""

    exit_code = 8


class DoctorFailed(BusError):
    """``quantbot-bus doctor`` found at least one failing check (each printed with its fix)."""

    exit_code = 9


#: The one place where error classes map to exit codes (documented in docs/operations.md).
EXIT_CODES: dict[type[BusError], int] = {
    cls: cls.exit_code
    for cls in (
        BusError,
        ConfigError,
        ContractError,
        CatalogError,
        CatalogMissingError,
        NotFoundError,
        QueryError,
        DaemonError,
        BusyError,
        InstallError,
        DoctorFailed,
    )
}


def exit_code_for(exc: BaseException) -> int:
    """Exit code for an exception: the nearest mapped class, 1 for anything else."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]  # type: ignore[index]
    return 1
