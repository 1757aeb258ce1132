"""Configuration: a frozen dataclass read from TOML, then the environment, then flags.

Precedence (lowest to highest):

1. embedded defaults (a bus in the current directory: ``./artifacts``, ``./exports``, ``./state``);
2. a TOML file: ``--config PATH``, else ``$QUANTBOT_BUS_CONFIG``, else ``./quantbot-bus.toml``
   if it exists;
3. environment variables ``QUANTBOT_BUS_<KEY>`` (upper-case key, e.g. ``QUANTBOT_BUS_ROOT``;
   only the keys below are read, other ``QUANTBOT_BUS_*`` variables are ignored);
4. command-line flags (passed as ``overrides``).

Keys (TOML, top level unless noted) and their environment names:

=====================  ==================================  =====================================
key                    env                                 default
=====================  ==================================  =====================================
root                   QUANTBOT_BUS_ROOT                   ./artifacts (or s3://BUCKET/PREFIX)
exports_dir            QUANTBOT_BUS_EXPORTS_DIR            ./exports
state_dir              QUANTBOT_BUS_STATE_DIR              ./state
rescan_interval_s      QUANTBOT_BUS_RESCAN_INTERVAL_S      300
pending_timeout_s      QUANTBOT_BUS_PENDING_TIMEOUT_S      600
pending_recheck_s      QUANTBOT_BUS_PENDING_RECHECK_S      2
settle_ms              QUANTBOT_BUS_SETTLE_MS              5
max_batch              QUANTBOT_BUS_MAX_BATCH              5000
export_interval_s      QUANTBOT_BUS_EXPORT_INTERVAL_S      1.0
polling                QUANTBOT_BUS_POLLING                false
poll_interval_s        QUANTBOT_BUS_POLL_INTERVAL_S        1.0
verify_hashes          QUANTBOT_BUS_VERIFY_HASHES          true
memory_limit           QUANTBOT_BUS_MEMORY_LIMIT           1GB (DuckDB memory cap of the catalog)
log_level              QUANTBOT_BUS_LOG_LEVEL              info
log_format             QUANTBOT_BUS_LOG_FORMAT             auto (json|console|auto)
catalog                QUANTBOT_BUS_CATALOG                duckdb (duckdb|iceberg)
catalog_uri            QUANTBOT_BUS_CATALOG_URI            none: postgresql://USER@HOST:PORT/DB
warehouse              QUANTBOT_BUS_WAREHOUSE              none: s3://BUCKET/warehouse
claim_lease_s          QUANTBOT_BUS_CLAIM_LEASE_S          60 (iceberg: a claim's lease)
[[exports]]            (TOML only)                         none: name, sql, format=parquet|csv
[regressions]          (TOML only)                         on: see quantbot_bus.regress.settings
[alerts]               (TOML only)                         log + alerts.jsonl: quantbot_bus.alerts
[report]               (TOML only)                         every 60 s: quantbot_bus.report.settings
=====================  ==================================  =====================================

Sections (TOML tables, :data:`SECTIONS`) are parsed and validated by their own module. Unknown
keys of a file, in any table, are reported together, each with a did-you-mean (``config_keys``).

``root = "s3://BUCKET/PREFIX"`` reads runs from object storage (docs/scale-out.md) and needs
``catalog = "iceberg"``; the AWS_* environment variables name the endpoint and credentials
(:mod:`quantbot_bus.objectstore.location`).

Relative paths in a TOML file are resolved against the file's directory; relative paths from
the environment or flags against the current directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alerts.settings import AlertSettings, parse_alert_settings
from .config_keys import UnknownKeysError, unknown_keys, unknown_keys_in_array
from .errors import ConfigError
from .objectstore.location import S3Location, is_s3_url
from .regress.settings import RegressionSettings, parse_regression_settings
from .report.settings import ReportSettings, parse_report_settings
from .user_exports import EXPORT_KEYS, UserExport, check_user_exports, parse_user_exports

ENV_PREFIX = "QUANTBOT_BUS_"
CONFIG_ENV = "QUANTBOT_BUS_CONFIG"
DEFAULT_CONFIG_NAME = "quantbot-bus.toml"


@dataclass(frozen=True)
class Config:
    root: Path = Path("artifacts")
    exports_dir: Path = Path("exports")
    state_dir: Path = Path("state")
    rescan_interval_s: float = 300.0
    pending_timeout_s: float = 600.0
    pending_recheck_s: float = 2.0
    settle_ms: float = 5.0
    max_batch: int = 5000
    export_interval_s: float = 1.0
    polling: bool = False
    poll_interval_s: float = 1.0
    verify_hashes: bool = True
    memory_limit: str = "1GB"
    log_level: str = "info"
    log_format: str = "auto"
    catalog: str = "duckdb"
    catalog_uri: str = ""
    warehouse: str = ""
    claim_lease_s: float = 60.0
    #: ``root`` when it is an ``s3://`` URL (``root`` then keeps its default); not a key of its
    #: own: set through ``root``
    object_root: str = field(default="", metadata={"derived_from": "root"})
    exports: tuple[UserExport, ...] = field(default_factory=tuple)
    regressions: RegressionSettings = field(
        default_factory=RegressionSettings, metadata={"section": True}
    )
    alerts: AlertSettings = field(default_factory=AlertSettings, metadata={"section": True})
    report: ReportSettings = field(default_factory=ReportSettings, metadata={"section": True})

    # Derived locations: one place that says where each file lives.
    @property
    def catalog_path(self) -> Path:
        """The daemon's private read-write catalog (only the daemon/sync ever opens it)."""
        return self.state_dir / "bus.duckdb"

    @property
    def snapshot_path(self) -> Path:
        """What readers open: the views file of the current publication (replaced by rename
        after each batch; see :mod:`quantbot_bus.publication`)."""
        return self.exports_dir / "bus.duckdb"

    @property
    def status_path(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "daemon.lock"

    def validate(self, *, producer: bool = False) -> Config:
        """Check every field; raise :class:`ConfigError` naming the first bad one. ``producer``:
        the config of a process that only writes runs (an ``s3://`` root then needs no catalog
        settings)."""
        positive = (
            "rescan_interval_s",
            "pending_timeout_s",
            "pending_recheck_s",
            "export_interval_s",
            "poll_interval_s",
            "claim_lease_s",
        )
        for name in positive:
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"config field {name!r} must be a number > 0, got {value!r}")
        if self.claim_lease_s < 1:  # renewed every third of it: shorter is a busy loop
            raise ConfigError(
                f"config field 'claim_lease_s' must be at least 1 (seconds), got {self.claim_lease_s!r}"
            )
        if not isinstance(self.settle_ms, int | float) or self.settle_ms < 0:
            raise ConfigError(
                f"config field 'settle_ms' must be a number >= 0, got {self.settle_ms!r}"
            )
        if (
            not isinstance(self.max_batch, int)
            or isinstance(self.max_batch, bool)
            or self.max_batch < 1
        ):
            raise ConfigError(
                f"config field 'max_batch' must be an integer >= 1, got {self.max_batch!r}"
            )
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"config field 'log_level' must be one of debug, info, warning, error; got {self.log_level!r}"
            )
        if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", self.memory_limit):
            raise ConfigError(
                "config field 'memory_limit' must be a size such as 512MB or 2GB, "
                f"got {self.memory_limit!r}"
            )
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError(
                f"config field 'log_format' must be auto, json or console; got {self.log_format!r}"
            )
        check_user_exports(self.exports)
        for name in ("root", "exports_dir", "state_dir"):
            if str(getattr(self, name)) == "":
                raise ConfigError(f"config field {name!r} must not be empty")
        self._validate_scale_out(producer)
        return self

    @property
    def write_root(self) -> str | Path:
        """Where producers write new runs: the ``s3://`` root when there is one (``RunWriter``
        uploads there), else the local ``root``."""
        return self.object_root or self.root

    @property
    def s3_root(self) -> S3Location | None:
        """The object-storage root, when ``root`` is an ``s3://`` URL."""
        return S3Location.parse(self.object_root) if self.object_root else None

    def _validate_scale_out(self, producer: bool) -> None:
        if self.catalog not in ("duckdb", "iceberg"):
            raise ConfigError(
                f"config field 'catalog' must be duckdb or iceberg, got {self.catalog!r}"
            )
        if self.object_root:
            S3Location.parse(self.object_root, "root")
            if producer:  # it uploads runs; the daemons register them
                return
            if self.catalog != "iceberg":
                raise ConfigError(
                    "config field 'root' is an s3:// URL, which needs catalog = \"iceberg\" "
                    "(the DuckDB catalog reads runs from a local directory)"
                )
        if self.catalog != "iceberg":
            return
        if not self.object_root:
            raise ConfigError(
                "config field 'root' must be an s3://BUCKET/PREFIX URL when catalog = \"iceberg\""
            )
        if not self.catalog_uri.startswith(("postgresql://", "postgres://", "postgresql+")):
            raise ConfigError(
                "config field 'catalog_uri' must be postgresql://USER@HOST:PORT/DB when "
                f'catalog = "iceberg", got {self.catalog_uri!r}'
            )
        S3Location.parse(self.warehouse, "warehouse")


#: The TOML tables with a module of their own: name -> parser(raw, base=the file's directory),
#: raising ConfigError.
SECTIONS: dict[str, Callable[..., Any]] = {
    "regressions": parse_regression_settings,
    "alerts": parse_alert_settings,
    "report": parse_report_settings,
}
#: The keys a TOML file, the environment or a flag may set (derived fields and sections are not).
_FIELDS = {
    f.name: f
    for f in dataclasses.fields(Config)
    if "derived_from" not in f.metadata and "section" not in f.metadata
}
_PATH_FIELDS = {"root", "exports_dir", "state_dir"}


def _coerce(name: str, raw: Any, *, base: Path | None) -> Any:
    """Turn a TOML/env/flag value into the field's type, or raise ConfigError naming it."""
    if name not in _FIELDS or name == "exports":
        raise UnknownKeysError(unknown_keys({name: raw}, {*_FIELDS, *SECTIONS} - {"exports"}))
    default = getattr(Config(), name)
    try:
        if name == "root" and is_s3_url(raw):
            return str(raw)
        if name in _PATH_FIELDS:
            path = Path(os.path.expanduser(str(raw)))
            if base is not None and not path.is_absolute():
                path = base / path
            return path
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if isinstance(default, float):
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if isinstance(default, str):
            if not isinstance(raw, str):
                raise ValueError(raw)
            return raw
    except (TypeError, ValueError):
        kind = type(default).__name__
        raise ConfigError(f"config field {name!r} must be a {kind}, got {raw!r}") from None
    return raw


def _parse_document(data: Mapping[str, Any], *, base: Path) -> dict[str, Any]:
    """A config file's values: every unknown key (any table) in one error first, then values."""
    unknown = unknown_keys(data, {*_FIELDS, *SECTIONS})
    values: dict[str, Any] = {}
    bad_section: ConfigError | None = None
    for key, raw in data.items():
        if key in SECTIONS:
            try:
                values[key] = SECTIONS[key](raw, base=base)
            except UnknownKeysError as exc:
                unknown += exc.items
            except ConfigError as exc:
                bad_section = bad_section or exc
        elif key == "exports":
            unknown += unknown_keys_in_array(raw, EXPORT_KEYS, "exports")
    if unknown:
        raise UnknownKeysError(unknown)
    if bad_section is not None:
        raise bad_section
    for key, raw in data.items():
        if key == "exports":
            values["exports"] = parse_user_exports(raw)
        elif key not in SECTIONS:
            values[key] = _coerce(key, raw, base=base)
    return values


def find_config_file(
    path: str | os.PathLike[str] | None, *, env: Mapping[str, str], cwd: Path
) -> Path | None:
    """The config file to read, absolute (it may not exist): ``path``, else
    ``$QUANTBOT_BUS_CONFIG``, else ``./quantbot-bus.toml`` if it exists; None when none is."""
    if path is not None:
        chosen = Path(path)
    elif env.get(CONFIG_ENV):
        chosen = Path(env[CONFIG_ENV])
    elif (cwd / DEFAULT_CONFIG_NAME).is_file():
        chosen = cwd / DEFAULT_CONFIG_NAME
    else:
        return None
    return chosen if chosen.is_absolute() else cwd / chosen


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    producer: bool = False,
) -> Config:
    """Build the validated :class:`Config` from defaults, TOML, environment and flags;
    ``producer``: for a process that only writes runs (:meth:`Config.validate`)."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    values: dict[str, Any] = {}

    config_file = find_config_file(path, env=env, cwd=cwd)
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        values.update(_parse_document(data, base=config_file.parent))

    for key in _FIELDS:
        if key == "exports":
            continue
        env_name = ENV_PREFIX + key.upper()
        if env.get(env_name) not in (None, ""):
            values[key] = _coerce(key, env[env_name], base=cwd)

    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(key, raw, base=cwd)

    if is_s3_url(values.get("root")):
        values["object_root"] = values.pop("root")
    for key in _PATH_FIELDS:
        path_value = values.get(key, getattr(Config(), key))
        values[key] = path_value if path_value.is_absolute() else cwd / path_value
    return Config(**values).validate(producer=producer)
