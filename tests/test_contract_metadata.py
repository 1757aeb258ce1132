"""The run-directory contract, table-driven over real run directories and real Parquet:
metadata.json rejected (Invalid): required fields, wrong types and values, run-level rules, run_id,
bad JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from builders import V1_REQUIRED, Mutator, assert_invalid, make_run, set_field

from quantbot_bus.contract import METADATA_NAME, validate_run_dir

# --------------------------------------------------------------------------- Invalid: fields


@pytest.mark.parametrize("field", V1_REQUIRED)
def test_each_required_field_missing(root: Path, field: str) -> None:
    def drop(meta: dict[str, Any], _: Path) -> None:
        del meta[field]

    assert_invalid(
        validate_run_dir(make_run(root, mutate=drop), root),
        f"metadata.json: required field '{field}' is missing",
    )


@pytest.mark.parametrize("field", ["name", "file", "format"])
def test_each_required_artifact_field_missing(root: Path, field: str) -> None:
    def drop(meta: dict[str, Any], _: Path) -> None:
        del meta["artifacts"][0][field]

    assert_invalid(
        validate_run_dir(make_run(root, mutate=drop), root),
        f"required field 'artifacts[0].{field}' is missing",
    )


def test_required_producer_name_missing(root: Path) -> None:
    def drop(meta: dict[str, Any], _: Path) -> None:
        meta["producer"] = {"version": "1"}

    assert_invalid(
        validate_run_dir(make_run(root, mutate=drop), root),
        "required field 'producer.name' is missing",
    )


def test_several_missing_fields_named_together(root: Path) -> None:
    def drop(meta: dict[str, Any], _: Path) -> None:
        del meta["status"], meta["params"]

    assert_invalid(
        validate_run_dir(make_run(root, mutate=drop), root),
        "required fields 'status', 'params' are missing",
    )


WRONG = [
    ("run_id", 5, "field 'run_id' must be 1-128 characters", "got 5"),
    ("run_type", "back test", "field 'run_type' must be 1-64 characters", "got 'back test'"),
    ("run_type", None, "field 'run_type' must be", "got null"),
    ("producer", "me", "field 'producer' must be an object", "got 'me'"),
    ("producer.name", "", "field 'producer.name' must be a non-empty string", "got ''"),
    ("producer.version", 3, "field 'producer.version' must be a string", "got 3"),
    ("status", "ok", 'field \'status\' must be "success" or "failed"', "got 'ok'"),
    ("status", True, "field 'status' must be", "got true"),
    (
        "created_at",
        1714564800,
        "field 'created_at' must be an ISO-8601 UTC timestamp",
        "got 1714564800",
    ),
    ("created_at", "yesterday", "field 'created_at' is not an ISO-8601 timestamp", "'yesterday'"),
    ("started_at", "2024-05-01T12:00:00", "field 'started_at' must be in UTC", "Z or +00:00"),
    ("finished_at", "2024-05-01T12:00:00+02:00", "field 'finished_at' must be in UTC", "+02:00"),
    ("params", [], "field 'params' must be an object", "got a list of 0 items"),
    ("params", None, "field 'params' must be an object", "got null"),
    ("git", {"dirty": "yes"}, "field 'git.dirty' must be true, false or null", "got 'yes'"),
    ("git", "main", "field 'git' must be an object", "got 'main'"),
    ("host", ["a"], "field 'host' must be a string", "got a list"),
    ("metrics", {"sharpe": True}, "field 'metrics.sharpe' must be a number", "got true"),
    ("metrics", {"sharpe": "1.2"}, "field 'metrics.sharpe' must be a number", "got '1.2'"),
    ("metrics", {"sharpe": None}, "field 'metrics.sharpe' must be a number", "got null"),
    ("metrics", [1, 2], "field 'metrics' must be an object whose values are numbers", "a list"),
    ("error", 42, "field 'error' must be a string", "got 42"),
    ("artifacts", {}, "field 'artifacts' must be a list of artifact objects", "got an object"),
    (
        "artifacts.0",
        "results.parquet",
        "field 'artifacts[0]' must be an object",
        "'results.parquet'",
    ),
    ("artifacts.0.rows", "ten", "field 'artifacts[0].rows' must be an integer >= 0", "got 'ten'"),
    ("artifacts.0.rows", -1, "field 'artifacts[0].rows' must be an integer >= 0", "got -1"),
    ("artifacts.0.rows", 2.5, "field 'artifacts[0].rows' must be an integer >= 0", "got 2.5"),
    ("artifacts.0.rows", 10**30, "field 'artifacts[0].rows' must be an integer", "huge integer"),
    ("artifacts.0.bytes", True, "field 'artifacts[0].bytes' must be an integer >= 0", "got true"),
    ("artifacts.0.sha256", "xyz", "field 'artifacts[0].sha256' must be 64 hexadecimal", "'xyz'"),
    ("artifacts.0.format", "csv", "field 'artifacts[0].format' must be \"parquet\"", "got 'csv'"),
    (
        "artifacts.0.name",
        "1results",
        "field 'artifacts[0].name' must be a table name",
        "'1results'",
    ),
    (
        "artifacts.0.name",
        "x;DROP TABLE runs",
        "field 'artifacts[0].name' must be a table name",
        "DROP",
    ),
    ("artifacts.0.name", "a" * 65, "field 'artifacts[0].name' must be a table name", "aaaa"),
    ("artifacts.0.file", "", "field 'artifacts[0].file' must be a relative path", "got ''"),
    ("artifacts.0.file", 7, "field 'artifacts[0].file' must be a relative path", "got 7"),
    ("schema_version", "1", "field 'schema_version' must be the integer 1", "got '1'"),
    ("schema_version", 0, "field 'schema_version' must be the integer 1", "got 0"),
    ("metric", {"a": 1}, "unknown field 'metric'", "put free-form values in 'params'"),
    ("artifacts.0.table", "x", "unknown field 'table' in 'artifacts[0]'", "allowed fields are"),
    ("producer.language", "rust", "unknown field 'language' in 'producer'", "name, version"),
]


@pytest.mark.parametrize(
    ("path", "value", "needle", "shown"),
    WRONG,
    ids=[f"{p}={str(v)[:20]}" for p, v, _, _ in WRONG],
)
def test_wrong_types_and_values(root: Path, path: str, value: Any, needle: str, shown: str) -> None:
    result = validate_run_dir(make_run(root, mutate=set_field(path, value)), root)
    assert assert_invalid(result, needle, shown).reason.startswith("metadata.json")


def test_higher_schema_version_asks_for_upgrade(root: Path) -> None:
    result = validate_run_dir(make_run(root, mutate=set_field("schema_version", 2)), root)
    assert_invalid(
        result,
        "written for contract v2, this release understands v1; upgrade quantbot-bus",
    )


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        pytest.param(
            set_field("status", "failed"),
            "status is 'failed' but there is no 'error'",
            id="failed-without-error",
        ),
        pytest.param(
            lambda m, d: m.update(status="failed", error="   "),
            "status is 'failed' but there is no 'error'",
            id="failed-with-blank-error",
        ),
        pytest.param(
            set_field("artifacts", []),
            "status is 'success' but 'artifacts' is empty",
            id="success-without-artifacts",
        ),
        pytest.param(
            lambda m, d: m["artifacts"].append(dict(m["artifacts"][0])),
            "artifact name 'results' is used twice",
            id="duplicate-artifact-name",
        ),
        pytest.param(
            lambda m, d: m["artifacts"].append(dict(m["artifacts"][0], name="Results")),
            "table names are case-insensitive",
            id="duplicate-artifact-name-case",
        ),
        pytest.param(
            lambda m, d: m["artifacts"].append(dict(m["artifacts"][0], name="other")),
            "uses the same file as artifact 'results'",
            id="duplicate-file",
        ),
    ],
)
def test_run_level_rules(root: Path, mutate: Mutator, needle: str) -> None:
    result = assert_invalid(validate_run_dir(make_run(root, mutate=mutate), root), needle)
    assert result.run_id == "run-1"


def test_schema_rejection_still_names_the_run(root: Path) -> None:
    result = validate_run_dir(make_run(root, mutate=set_field("status", "ok")), root)
    assert assert_invalid(result, "field 'status'").run_id == "run-1"


# --------------------------------------------------------------------------- run_id


def test_run_id_must_equal_directory_name(root: Path) -> None:
    run_dir = make_run(root, dir_name="run-2")
    result = assert_invalid(
        validate_run_dir(run_dir, root),
        "run_id 'run-1' in metadata.json does not match the directory name 'run-2'",
    )
    assert result.run_id == "run-1"


@pytest.mark.parametrize(
    "run_id",
    [
        "it's",
        'say"hi"',
        "x;DROP TABLE runs",
        "x'); DELETE FROM catalog.runs_d; --",
        "a\nb",
        "abc\n",
        "rün",
        "运行",
        "a b",
        "-leading-dash",
        ".hidden",
        "x" * 129,
        "tab\there",
    ],
    ids=lambda r: repr(r)[:24],
)
def test_bad_run_ids_rejected(root: Path, run_id: str) -> None:
    # the directory is named exactly like the run_id, so only the pattern can reject it
    run_dir = make_run(root, run_id=run_id)
    assert run_dir.name == run_id
    result = assert_invalid(validate_run_dir(run_dir, root), "field 'run_id' must be 1-128")
    assert result.run_id is None
    assert "\n" not in result.reason  # shown escaped, one line in the log


def test_empty_run_id_rejected(root: Path) -> None:
    run_dir = make_run(root, run_id="", dir_name="x")
    assert_invalid(validate_run_dir(run_dir, root), "field 'run_id' must be 1-128", "got ''")


# --------------------------------------------------------------------------- JSON level


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "metadata.json is empty"),
        (b"  \n", "metadata.json is empty"),
        (
            b'{"run_id": "run-1",',
            "is not valid JSON: Expecting property name enclosed in double quotes at line 1",
        ),
        (b"{'run_id': 'run-1'}", "is not valid JSON"),
        (b"[1, 2, 3]", "metadata.json must hold a JSON object, got a list"),
        (b'"run-1"', "metadata.json must hold a JSON object, got 'run-1'"),
        (b"null", "must hold a JSON object, got null"),
        (b'{"run_id": "a", "run_id": "b"}', "the key 'run_id' appears twice in one object"),
        (b'{"run_id": "caf\xe9"}', "not UTF-8 text (invalid byte at offset 15)"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_bad_json(root: Path, content: bytes, needle: str) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).write_bytes(content)
    assert_invalid(validate_run_dir(run_dir, root), needle)
