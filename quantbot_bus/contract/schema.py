"""The JSON Schema of metadata.json (``run_schema.json`` beside this module): loading it,
compiling it, and turning its errors into one sentence naming the field.

A document is checked by a compiled (fastjsonschema) validator first; only its "valid" is trusted,
anything else goes to the full (jsonschema) validator, which decides and explains."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from .model import QUANTBOT_TS
from .reasons import _field_path, _show


@cache
def load_run_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of metadata.json v1, loaded once from the package."""
    text = resources.files("quantbot_bus.contract").joinpath("run_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with its local ``#/$defs/...`` references substituted (a third faster to
    evaluate than resolving them on every document)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


@cache
def _validators() -> tuple[Any, Any]:
    """The full validators (jsonschema): slow, but they say exactly what is wrong."""
    from jsonschema import Draft202012Validator

    schema = load_run_schema()
    defs = schema["$defs"]
    return (
        Draft202012Validator(_inline_refs(schema, defs)),
        Draft202012Validator(_inline_refs(defs["quantbot_ts"], defs)),
    )


def _fast_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A schema for fastjsonschema: references inlined, no ``$id``/``x-expect``, declared draft-07
    (every keyword the run schema uses means the same in draft-07 and 2020-12)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "x-expect"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out: dict[str, Any] = strip(node)
    out.pop("$id", None)
    out["$schema"] = "http://json-schema.org/draft-07/schema#"
    return out


@cache
def _fast_validators() -> tuple[Any, Any]:
    """Compiled (fastjsonschema) validators: the fast path for documents that are valid. Only a
    "valid" answer is trusted; on anything else the full validator decides and explains."""
    import fastjsonschema

    schema = load_run_schema()
    defs = schema["$defs"]

    def compile_(node: dict[str, Any]) -> Any:
        return fastjsonschema.compile(_fast_schema(_inline_refs(node, defs)), use_default=False)

    return compile_(schema), compile_(defs["quantbot_ts"])


def _schema_problem(doc: Any, shape: str) -> str | None:
    """None if ``doc`` matches the schema of ``shape``, else the reason (full validator)."""
    index = 1 if shape == QUANTBOT_TS else 0
    fast = _fast_validators()[index]  # compiled once; a failure to compile is a bug: raise
    try:
        fast(doc)
    except Exception:  # JsonSchemaValueException, or anything odd: let the full validator decide
        return _first_schema_error(_validators()[index], doc, shape)
    return None


def _schema_reason(error: Any, shape: str) -> str:
    """One sentence from a jsonschema error, naming the field path."""
    path = list(error.absolute_path)
    where = _field_path(path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    expect = schema.get("x-expect")
    suffix = " (quantbot TypeScript-producer shape)" if shape == QUANTBOT_TS else ""
    kind = error.validator
    if kind == "required" and isinstance(error.instance, dict):
        missing = [
            _field_path([*path, k]) for k in error.validator_value if k not in error.instance
        ]
        hint = ""
        if "schema_version" in missing:
            hint = ' (this release understands contract v1: add "schema_version": 1)'
        if len(missing) == 1:
            return f"metadata.json: required field '{missing[0]}' is missing{hint}{suffix}"
        names = ", ".join(f"'{m}'" for m in missing)
        return f"metadata.json: required fields {names} are missing{hint}{suffix}"
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        place = f" in '{where}'" if where else ""
        hint = "; put free-form values in 'params'" if not where else ""
        first = _show(extra[0], 40) if extra else "?"
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        return (
            f"metadata.json: unknown field {first}{more}{place}; "
            f"allowed fields are {', '.join(allowed)}{hint}{suffix}"
        )
    if expect:
        if not where:
            return f"metadata.json must hold {expect}, got {_show(error.instance)}{suffix}"
        return (
            f"metadata.json: field '{where}' must be {expect}, got {_show(error.instance)}{suffix}"
        )
    target = f"field '{where}'" if where else "the document"
    return f"metadata.json: {target}: {error.message[:200]}{suffix}"


def _first_schema_error(validator: Any, doc: Any, shape: str) -> str | None:
    errors = []
    seen_required: set[tuple[Any, ...]] = set()
    for error in validator.iter_errors(doc):
        if error.validator == "required":  # one error per missing key: report them together
            key = tuple(error.absolute_path)
            if key in seen_required:
                continue
            seen_required.add(key)
        errors.append(error)
    if not errors:
        return None
    errors.sort(
        key=lambda e: (
            len(e.absolute_path),
            [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in e.absolute_path],
            e.validator != "required",
        )
    )
    reason = _schema_reason(errors[0], shape)
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return reason
