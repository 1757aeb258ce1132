"""What :class:`~quantbot_bus.writer.RunWriter` accepts from a producer: a run type, a run id,
a producer, params and metrics, each refused with a ContractError that names it and says what
would do."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .contract import RUN_ID_RE, RUN_TYPE_RE
from .errors import ContractError


def check_run_type(run_type: Any, *, seed: bool = False) -> str:
    """A run type: a directory name of the run id's alphabet, at most 64 characters in
    metadata.json (a v1 run), 128 in a seed run's run.json."""
    pattern, most = (RUN_ID_RE, 128) if seed else (RUN_TYPE_RE, 64)
    if not isinstance(run_type, str) or not pattern.fullmatch(run_type):
        raise ContractError(
            f"run_type {run_type!r} is not a valid directory name: use letters, digits, "
            f"'.', '_' and '-', starting with a letter or digit (at most {most} characters)"
        )
    return run_type


def check_run_id(run_id: Any) -> str:
    """A run id (:data:`~quantbot_bus.contract.RUN_ID_RE`)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ContractError(
            f"run_id {run_id!r} is not valid: it must match {RUN_ID_RE.pattern} "
            "(letters, digits, '.', '_', '-'; starting with a letter or digit; ≤ 128 chars)"
        )
    return run_id


def check_producer(producer: Any) -> None:
    """A (name, version) pair of non-empty strings."""
    if (
        not isinstance(producer, tuple | list)
        or len(producer) != 2
        or not all(isinstance(p, str) and p for p in producer)
    ):
        raise ContractError(
            f"producer must be a (name, version) pair of non-empty strings, got {producer!r}"
        )


def check_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's params as a dict, which JSON must write (no NaN)."""
    out = dict(params or {})
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"params must be JSON-serialisable (no NaN): {exc}") from None
    return out


def check_metric(name: Any, value: Any) -> float | int:
    """A run metric's value: a finite int or float (not a bool) under a non-empty name."""
    if not isinstance(name, str) or not name:
        raise ContractError(f"metric names must be non-empty strings, got {name!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(
            f"metric {name!r} must be a number (int or float, not bool), got {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ContractError(f"metric {name!r} must be a finite number, got {value!r}")
    return value
