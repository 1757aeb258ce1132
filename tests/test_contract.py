"""The run-directory contract: table-driven tests over real run directories and real Parquet."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from builders import (
    V1_REQUIRED,
    Mutator,
    artifact_entry,
    assert_incomplete,
    assert_invalid,
    make_run,
    make_ts_run,
    v1_metadata,
    write_metadata,
    write_parquet,
)
from jsonschema import Draft202012Validator

from quantbot_bus.contract import (
    METADATA_NAME,
    Valid,
    fingerprint_of,
    iter_run_dir_paths,
    iter_run_dirs,
    load_run_schema,
    quick_fingerprint,
    validate_run_dir,
    walk_run_dirs,
)
from quantbot_bus.contract import schema as contract_schema
from quantbot_bus.ignore import is_ignored

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- valid


def test_valid_run_is_normalised(root: Path) -> None:
    run_dir = make_run(
        root,
        tables={"results": 3, "summary": 1},
        producer={"name": "test-producer", "version": "1.2.3"},
        started_at="2024-05-01T12:00:00.250+00:00",
        finished_at="2024-05-01T12:00:05Z",
        params={"strategy": "path-only", "interval": "1m", "grid": [1, 2]},
        metrics={"sharpe": 1.25, "calls": 3},
        git={"commit": "0123abc", "branch": "main", "dirty": False},
        host="research-1",
    )
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    run = result.run
    assert run.run_id == "run-1"
    assert run.run_type == "backtest"
    assert (run.producer, run.producer_version) == ("test-producer", "1.2.3")
    assert run.status == "success"
    assert run.created_at == "2024-05-01T12:00:00Z"
    assert run.started_at == "2024-05-01T12:00:00.250000Z"
    assert run.finished_at == "2024-05-01T12:00:05Z"
    assert run.params == {"strategy": "path-only", "interval": "1m", "grid": [1, 2]}
    assert run.metrics == {"sharpe": 1.25, "calls": 3}
    assert (type(run.metrics["sharpe"]), type(run.metrics["calls"])) == (float, int)  # JSON's
    assert (run.git_commit, run.git_branch, run.git_dirty) == ("0123abc", "main", False)
    assert run.host == "research-1"
    assert run.error is None
    assert run.shape == "v1"
    assert run.run_dir == run_dir and run.run_dir.is_absolute()
    assert run.metadata_json == (run_dir / METADATA_NAME).read_text()
    assert run.metadata_mtime_ns == (run_dir / METADATA_NAME).stat().st_mtime_ns
    assert run.fingerprint == quick_fingerprint(run_dir)
    assert [a.name for a in run.artifacts] == ["results", "summary"]
    results = run.artifacts[0]
    data = (run_dir / "results.parquet").read_bytes()
    assert results.file == "results.parquet"
    assert results.path == run_dir / "results.parquet"
    assert results.format == "parquet"
    assert results.rows == 3
    assert results.bytes == len(data)
    assert results.sha256 == hashlib.sha256(data).hexdigest()
    assert json.loads(results.arrow_schema) == [
        {"name": "call_id", "type": "string", "nullable": True},
        {"name": "ret_bps", "type": "double", "nullable": True},
    ]
    assert run.total_rows == 4
    assert run.total_bytes == results.bytes + run.artifacts[1].bytes


def test_optional_fields_may_be_absent_or_null(root: Path) -> None:
    def strip(meta: dict[str, Any], _: Path) -> None:
        for key in ("git", "host", "metrics"):
            del meta[key]
        meta["producer"] = {"name": "p"}
        art = meta["artifacts"][0]
        art["rows"] = art["bytes"] = art["sha256"] = None

    run_dir = make_run(root, mutate=strip)
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    run = result.run
    assert (run.git_commit, run.git_branch, run.git_dirty, run.host) == (None, None, None, None)
    assert run.metrics == {} and run.producer_version is None
    art = run.artifacts[0]
    assert art.rows == 3  # from the footer
    assert art.sha256 == hashlib.sha256((run_dir / "results.parquet").read_bytes()).hexdigest()


def test_sha256_not_computed_without_verify_hashes(root: Path) -> None:
    def no_hash(meta: dict[str, Any], _: Path) -> None:
        del meta["artifacts"][0]["sha256"]

    run_dir = make_run(root, mutate=no_hash)
    result = validate_run_dir(run_dir, root, verify_hashes=False)
    assert isinstance(result, Valid)
    assert result.run.artifacts[0].sha256 is None


def test_declared_sha256_kept_and_not_checked_without_verify_hashes(root: Path) -> None:
    def wrong_hash(meta: dict[str, Any], _: Path) -> None:
        meta["artifacts"][0]["sha256"] = "AB" * 32

    run_dir = make_run(root, mutate=wrong_hash)
    result = validate_run_dir(run_dir, root, verify_hashes=False)
    assert isinstance(result, Valid)
    assert result.run.artifacts[0].sha256 == "ab" * 32
    assert_invalid(validate_run_dir(run_dir, root), "sha256")


def test_uppercase_sha256_accepted(root: Path) -> None:
    def upper(meta: dict[str, Any], _: Path) -> None:
        meta["artifacts"][0]["sha256"] = meta["artifacts"][0]["sha256"].upper()

    result = validate_run_dir(make_run(root, mutate=upper), root)
    assert isinstance(result, Valid), result


def test_failed_run_with_error_and_no_artifacts_is_valid(root: Path) -> None:
    def failed(meta: dict[str, Any], _: Path) -> None:
        meta["status"] = "failed"
        meta["error"] = "ValueError: no candles for interval 1m"
        meta["artifacts"] = []

    result = validate_run_dir(make_run(root, tables={}, mutate=failed), root)
    assert isinstance(result, Valid), result
    assert result.run.status == "failed"
    assert result.run.error == "ValueError: no candles for interval 1m"
    assert result.run.artifacts == ()


def test_file_in_subdirectory_and_bom_accepted(root: Path) -> None:
    def subdir(meta: dict[str, Any], run_dir: Path) -> None:
        data = write_parquet(run_dir / "tables" / "calls.parquet", 5)
        meta["artifacts"].append(artifact_entry("tables/calls.parquet", data, 5))

    run_dir = make_run(root, mutate=subdir)
    text = (run_dir / METADATA_NAME).read_text()
    (run_dir / METADATA_NAME).write_bytes(b"\xef\xbb\xbf" + text.encode())  # a Windows BOM
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.artifacts[1].path == run_dir / "tables" / "calls.parquet"


def test_relative_paths_are_made_absolute(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = make_run(root)
    monkeypatch.chdir(root.parent)
    result = validate_run_dir(Path("artifacts/backtest/run-1"), Path("artifacts"))
    assert isinstance(result, Valid), result
    assert result.run.run_dir == run_dir


# --------------------------------------------------------------------------- Incomplete


def test_no_metadata_json_is_incomplete(root: Path) -> None:
    run_dir = root / "backtest" / "run-1"
    run_dir.mkdir(parents=True)
    write_parquet(run_dir / "results.parquet")
    assert_incomplete(validate_run_dir(run_dir, root), "no metadata.json yet")


def test_missing_run_dir_is_incomplete(root: Path) -> None:
    assert_incomplete(validate_run_dir(root / "backtest" / "gone", root), "does not exist")


def test_listed_file_missing_is_incomplete(root: Path) -> None:
    def remove(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "results.parquet").unlink()

    result = validate_run_dir(make_run(root, mutate=remove), root)
    assert_incomplete(result, "artifact 'results'", "'results.parquet'", "does not exist yet")


def test_truncated_parquet_shorter_than_declared_is_incomplete(root: Path) -> None:
    def truncate(meta: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "results.parquet"
        os.truncate(path, path.stat().st_size // 2)

    run_dir = make_run(root, mutate=truncate)
    size = (run_dir / "results.parquet").stat().st_size
    declared = json.loads((run_dir / METADATA_NAME).read_text())["artifacts"][0]["bytes"]
    assert size < declared
    assert_incomplete(
        validate_run_dir(run_dir, root), f"has {size} of its {declared}", "still being written"
    )


# --------------------------------------------------------------------------- Invalid: Parquet


def _overwrite_same_size(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    size = path.stat().st_size
    data = path.read_bytes()[: size // 2]
    path.write_bytes(data + b"\0" * (size - len(data)))  # truncated, then padded to full size


def _corrupt_footer(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    data = bytearray(path.read_bytes())
    footer_len = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_len
    data[start : start + footer_len] = b"\xff" * footer_len
    path.write_bytes(bytes(data))


def _huge_footer_length(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    data = bytearray(path.read_bytes())
    data[-8:-4] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def _csv_instead(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    text = b"a,b\n1,2\n"
    path.write_bytes(text)
    meta["artifacts"][0].update(bytes=len(text), sha256=hashlib.sha256(text).hexdigest())


def _rows(n: int) -> Mutator:
    def set_rows(meta: dict[str, Any], _: Path) -> None:
        meta["artifacts"][0]["rows"] = n

    return set_rows


def _bytes_smaller(meta: dict[str, Any], _: Path) -> None:
    meta["artifacts"][0]["bytes"] -= 1


def _sha_wrong(meta: dict[str, Any], _: Path) -> None:
    meta["artifacts"][0]["sha256"] = hashlib.sha256(b"something else").hexdigest()


def _flip_data_byte(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # inside a data page: footer still fine, size unchanged, hash differs
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        pytest.param(
            _overwrite_same_size,
            ["is not a Parquet file", "PAR1", "full declared size"],
            id="truncated-full-size",
        ),
        pytest.param(_corrupt_footer, ["Parquet footer cannot be read"], id="corrupt-footer"),
        pytest.param(_huge_footer_length, ["Parquet footer is damaged"], id="footer-length"),
        pytest.param(_csv_instead, ["is not a Parquet file"], id="csv-not-parquet"),
        pytest.param(
            _rows(4),
            ["has 3 rows in its Parquet footer but metadata.json declares 4"],
            id="rows-mismatch",
        ),
        pytest.param(_bytes_smaller, ["bytes but metadata.json declares"], id="bytes-mismatch"),
        pytest.param(_sha_wrong, ["sha256", "but metadata.json declares"], id="sha256-mismatch"),
        pytest.param(_flip_data_byte, ["sha256"], id="sha256-file-changed"),
    ],
)
def test_parquet_problems_are_invalid(root: Path, mutate: Mutator, needles: list[str]) -> None:
    result = assert_invalid(validate_run_dir(make_run(root, mutate=mutate), root), *needles)
    assert "artifact 'results' (file 'results.parquet')" in result.reason
    assert result.run_id == "run-1"


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


def _set(path: str, value: Any) -> Mutator:
    """Set a field by a dotted path (list indexes as numbers), e.g. 'artifacts.0.rows'."""

    def setter(meta: dict[str, Any], _: Path) -> None:
        target: Any = meta
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = parts[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return setter


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
    result = validate_run_dir(make_run(root, mutate=_set(path, value)), root)
    assert assert_invalid(result, needle, shown).reason.startswith("metadata.json")


def test_higher_schema_version_asks_for_upgrade(root: Path) -> None:
    result = validate_run_dir(make_run(root, mutate=_set("schema_version", 2)), root)
    assert_invalid(
        result,
        "written for contract v2, this release understands v1; upgrade quantbot-bus",
    )


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        pytest.param(
            _set("status", "failed"),
            "status is 'failed' but there is no 'error'",
            id="failed-without-error",
        ),
        pytest.param(
            lambda m, d: m.update(status="failed", error="   "),
            "status is 'failed' but there is no 'error'",
            id="failed-with-blank-error",
        ),
        pytest.param(
            _set("artifacts", []),
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


def test_invalid_artifact_wins_over_incomplete_one(root: Path) -> None:
    def mixed(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "results.parquet").unlink()  # not there yet: alone, this is Incomplete
        (run_dir / "calls.parquet").symlink_to("/etc/passwd")  # but this one is hostile
        meta["artifacts"].append({"name": "calls", "file": "calls.parquet", "format": "parquet"})

    assert_invalid(validate_run_dir(make_run(root, mutate=mixed), root), "artifact 'calls'")


def test_schema_rejection_still_names_the_run(root: Path) -> None:
    result = validate_run_dir(make_run(root, mutate=_set("status", "ok")), root)
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


# --------------------------------------------------------------------------- file paths


@pytest.mark.parametrize(
    ("file", "needle"),
    [
        ("../run-2/results.parquet", "contains '..'"),
        ("../../../../../../etc/passwd", "contains '..'"),
        ("sub/../results.parquet", "contains '..'"),
        ("/etc/passwd", "is an absolute path"),
        ("//etc/passwd", "is an absolute path"),
        (".results.parquet", "hidden"),
        ("sub/.cache/results.parquet", "hidden"),
        ("results.parquet.tmp", ".tmp/.partial"),
        ("results.parquet.partial", ".tmp/.partial"),
        ("work.tmp/results.parquet", ".tmp/.partial"),
        ("./results.parquet", "'.' component"),
        ("sub//results.parquet", "empty or '.' component"),
        ("results.parquet/", "empty or '.' component"),
        ("sub\\results.parquet", "backslash"),
        ("results\x00.parquet", "NUL"),
        ("metadata.json", "is metadata.json itself"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_bad_file_paths(root: Path, file: str, needle: str) -> None:
    result = validate_run_dir(make_run(root, mutate=_set("artifacts.0.file", file)), root)
    assert_invalid(result, "artifact 'results'", "the file path", needle)


def test_symlink_escaping_root_to_etc_passwd(root: Path) -> None:
    def link(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "passwd.parquet").symlink_to("/etc/passwd")
        meta["artifacts"][0].update(file="passwd.parquet", bytes=None, sha256=None, rows=None)

    assert_invalid(
        validate_run_dir(make_run(root, mutate=link), root),
        "resolves to '/etc/passwd', outside the artifacts root",
        "copy the file into the run directory",
    )


def test_symlink_to_real_parquet_outside_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "t.parquet"
    write_parquet(outside)

    def link(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "results.parquet").unlink()
        (run_dir / "results.parquet").symlink_to(outside)

    assert_invalid(
        validate_run_dir(make_run(root, mutate=link), root), "outside the artifacts root"
    )


def test_symlinked_directory_component_escaping_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    data = write_parquet(outside / "t.parquet")

    def link(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "sub").symlink_to(outside, target_is_directory=True)
        meta["artifacts"][0] = artifact_entry("sub/t.parquet", data, 3, name="results")

    assert_invalid(
        validate_run_dir(make_run(root, mutate=link), root), "outside the artifacts root"
    )


def test_symlink_inside_root_is_tolerated(root: Path) -> None:
    shared = root / "shared" / "calls.parquet"
    data = write_parquet(shared, 4)

    def link(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "calls.parquet").symlink_to(shared)
        meta["artifacts"].append(artifact_entry("calls.parquet", data, 4))

    run_dir = make_run(root, mutate=link)
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    calls = result.run.artifacts[1]
    assert calls.path == run_dir / "calls.parquet"
    assert (calls.rows, calls.bytes) == (4, len(data))


def test_metadata_json_symlink_out_of_root(root: Path, tmp_path: Path) -> None:
    run_dir = make_run(root)
    outside = tmp_path / "meta.json"
    outside.write_text((run_dir / METADATA_NAME).read_text())
    (run_dir / METADATA_NAME).unlink()
    (run_dir / METADATA_NAME).symlink_to(outside)
    assert_invalid(
        validate_run_dir(run_dir, root), "metadata.json is a symbolic link leading outside"
    )


def test_run_dir_outside_root(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run_dir = make_run(other)
    assert_invalid(validate_run_dir(run_dir, root), "is not a directory below the artifacts root")
    assert_invalid(validate_run_dir(root, root), "is not a directory below the artifacts root")


def test_run_dir_that_is_a_symlink(root: Path) -> None:
    run_dir = make_run(root)
    link = root / "backtest" / "run-2"
    link.symlink_to(run_dir, target_is_directory=True)
    assert_invalid(validate_run_dir(link, root), "the run directory is a symbolic link")


def test_artifact_that_is_a_directory(root: Path) -> None:
    def make_dir(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "results.parquet").unlink()
        (run_dir / "results.parquet").mkdir()

    assert_invalid(
        validate_run_dir(make_run(root, mutate=make_dir), root), "is a directory, not a regular"
    )


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


# --------------------------------------------------------------------------- TypeScript shape


def test_typescript_shape_is_normalised(root: Path) -> None:
    run_dir = make_ts_run(root, "ts-run-1")
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    run = result.run
    assert run.shape == "quantbot-ts"
    assert run.run_id == "ts-run-1"
    assert run.run_type == "backtest"
    assert run.producer == "quantbot-ts"
    assert run.producer_version is None
    assert run.status == "success"
    assert run.created_at == run.started_at == run.finished_at == "2024-05-01T12:00:00Z"
    assert run.params == {
        "backtest_type": "policy",
        "interval": "5m",
        "callsProcessed": 120,
        "rowsWritten": 3,
        "policyId": "sl10_tp50_trail5",
    }
    assert run.metrics == {}
    assert (run.git_commit, run.git_branch, run.git_dirty, run.host, run.error) == (None,) * 5
    assert run.metadata_json == (run_dir / METADATA_NAME).read_text()
    assert run.fingerprint == quick_fingerprint(run_dir)
    (art,) = run.artifacts
    data = (run_dir / "results.parquet").read_bytes()
    assert art.name == "backtest_policy_results"
    assert art.file == "results.parquet"
    assert art.path == run_dir / "results.parquet"  # parquet_path (the producer's) is ignored
    assert (art.format, art.rows, art.bytes) == ("parquet", 3, len(data))
    assert art.sha256 == hashlib.sha256(data).hexdigest()
    assert [c["name"] for c in json.loads(art.arrow_schema)] == ["call_id", "ret_bps"]


@pytest.mark.parametrize("backtest_type", ["path-only", "policy", "full"])
def test_typescript_backtest_types(root: Path, backtest_type: str) -> None:
    run_dir = make_ts_run(root, mutate=_set("backtest_type", backtest_type))
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.params["backtest_type"] == backtest_type


def _ts_truncate(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    os.truncate(path, path.stat().st_size - 20)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        pytest.param(
            lambda m, d: m.pop("parquet_file"),
            "required field 'parquet_file' is missing (quantbot TypeScript-producer shape)",
            id="missing-parquet_file",
        ),
        pytest.param(
            lambda m, d: m.pop("rows"),
            "required field 'rows' is missing (quantbot TypeScript-producer shape)",
            id="missing-rows",
        ),
        pytest.param(
            _set("backtest_type", "walk-forward"),
            'field \'backtest_type\' must be "path-only", "policy" or "full"',
            id="bad-backtest_type",
        ),
        pytest.param(
            _set("rows", 99),
            "has 3 rows in its Parquet footer but metadata.json declares 99",
            id="rows-mismatch",
        ),
        pytest.param(
            _set("table_name", "policy-results"),
            "field 'table_name' must be a table name",
            id="bad-table",
        ),
        pytest.param(
            _set("created_at_utc", "2024-05-01T14:00:00+02:00"), "must be in UTC", id="not-utc"
        ),
        pytest.param(_set("parquet_file", "../x/results.parquet"), "contains '..'", id="traversal"),
        pytest.param(_set("parquet_file", "/tmp/results.parquet"), "absolute path", id="absolute"),
        pytest.param(
            _set("run_id", "ts-run-2"), "does not match the directory name", id="dir-mismatch"
        ),
        pytest.param(_ts_truncate, "may be truncated", id="truncated-no-declared-bytes"),
    ],
)
def test_typescript_shape_invalid(root: Path, mutate: Mutator, needle: str) -> None:
    assert_invalid(validate_run_dir(make_ts_run(root, mutate=mutate), root), needle)


def test_typescript_shape_missing_parquet_is_incomplete(root: Path) -> None:
    run_dir = make_ts_run(root, mutate=lambda m, d: (d / "results.parquet").unlink())
    assert_incomplete(validate_run_dir(run_dir, root), "does not exist yet")


# --------------------------------------------------------------------------- schema file and doc


def test_schema_is_valid_2020_12_and_shipped() -> None:
    schema = load_run_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == set(V1_REQUIRED)
    assert load_run_schema() is schema  # loaded once
    assert (REPO / "quantbot_bus" / "contract" / "run_schema.json").is_file()


def _doc_examples() -> list[Any]:
    text = (REPO / "docs" / "contract.md").read_text()
    blocks = re.findall(r"<!-- example: (\S+) -->\s*```json\n(.*?)```", text, re.S)
    return [(name, json.loads(body)) for name, body in blocks]


def test_doc_examples_are_accepted(root: Path) -> None:
    """Every example metadata.json in docs/contract.md is accepted, with real files behind it."""
    examples = _doc_examples()
    assert {name for name, _ in examples} >= {"v1", "quantbot-ts"}
    for name, meta in examples:
        run_dir = root / name / meta["run_id"]
        if "artifacts" in meta:
            for art in meta["artifacts"]:
                data = write_parquet(run_dir / art["file"], art["rows"])
                art.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        else:
            write_parquet(run_dir / meta["parquet_file"], meta["rows"])
        write_metadata(run_dir, meta)
        result = validate_run_dir(run_dir, root)
        assert isinstance(result, Valid), (name, result)


# --------------------------------------------------------------------------- quick_fingerprint


def test_fingerprint_none_without_metadata(root: Path) -> None:
    run_dir = root / "backtest" / "r"
    run_dir.mkdir(parents=True)
    assert quick_fingerprint(run_dir) is None
    assert quick_fingerprint(root / "does-not-exist") is None


def test_fingerprint_stable_and_sensitive(root: Path) -> None:
    run_dir = make_run(root, tables={"results": 3, "summary": 1})
    fp = quick_fingerprint(run_dir)
    assert fp is not None and fp == quick_fingerprint(run_dir)

    # an unlisted file does not matter
    (run_dir / "notes.txt").write_text("hello")
    assert quick_fingerprint(run_dir) == fp

    results = run_dir / "results.parquet"
    st = results.stat()
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched
    touched = quick_fingerprint(run_dir)
    assert touched != fp
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns))  # back: same fingerprint again
    assert quick_fingerprint(run_dir) == fp

    with results.open("ab") as f:  # resized, mtime restored: still different
        f.write(b"x")
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert quick_fingerprint(run_dir) not in (fp, touched)

    os.truncate(results, st.st_size)
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert quick_fingerprint(run_dir) == fp
    (run_dir / "summary.parquet").unlink()  # a listed file deleted
    assert quick_fingerprint(run_dir) != fp


def test_fingerprint_follows_metadata_and_unparsable_metadata(root: Path) -> None:
    run_dir = make_run(root)
    fp = quick_fingerprint(run_dir)
    meta = run_dir / METADATA_NAME
    meta.write_text("{not json")
    broken = quick_fingerprint(run_dir)
    assert broken is not None and broken != fp
    # unparsable: only metadata.json's own stat counts, so the data file no longer matters
    with (run_dir / "results.parquet").open("ab") as f:
        f.write(b"x")
    assert quick_fingerprint(run_dir) == broken


def test_fingerprint_typescript_shape_lists_parquet_file(root: Path) -> None:
    run_dir = make_ts_run(root)
    fp = quick_fingerprint(run_dir)
    with (run_dir / "results.parquet").open("ab") as f:
        f.write(b"x")
    assert quick_fingerprint(run_dir) != fp


def test_fingerprint_of_metadata_directory(root: Path) -> None:
    run_dir = root / "backtest" / "r"
    (run_dir / METADATA_NAME).mkdir(parents=True)
    assert quick_fingerprint(run_dir) is not None


def test_fingerprint_of_equals_quick_fingerprint(root: Path) -> None:
    def in_subdir(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "data").mkdir()
        data = write_parquet(run_dir / "data" / "calls.parquet", 2)
        meta["artifacts"].append(artifact_entry("data/calls.parquet", data, 2))

    # listed out of name order, one file in a subdirectory
    run_dir = make_run(root, tables={"zeta": 3, "alpha": 1}, mutate=in_subdir)
    files = ["zeta.parquet", "alpha.parquet", "data/calls.parquet"]
    fp = quick_fingerprint(run_dir)
    assert fp is not None
    assert fingerprint_of(run_dir, files) == fp
    assert fingerprint_of(str(run_dir), list(reversed(files))) == fp  # order does not matter
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid) and result.run.fingerprint == fp
    # what the catalog knows (the artifacts' paths) gives the same fingerprint
    known = [a.path.relative_to(run_dir).as_posix() for a in result.run.artifacts]
    assert fingerprint_of(run_dir, known) == fp
    # the lstat a directory walk already took gives the same answer
    (walked,) = [st for path, st in walk_run_dirs(root) if path == str(run_dir)]
    assert fingerprint_of(run_dir, files, metadata_lstat=walked) == fp

    # another file list is another fingerprint (metadata.json's stat alone is not enough)
    assert fingerprint_of(run_dir, files[:2]) != fp
    assert fingerprint_of(run_dir, [*files, "other.parquet"]) != fp
    # a listed file touched: both see it, and still agree
    alpha = run_dir / "alpha.parquet"
    st = alpha.stat()
    os.utime(alpha, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = quick_fingerprint(run_dir)
    assert touched != fp and fingerprint_of(run_dir, files) == touched
    alpha.unlink()  # a listed file deleted
    gone = quick_fingerprint(run_dir)
    assert gone not in (fp, touched) and fingerprint_of(run_dir, files) == gone
    # metadata.json rewritten (same list): its own stat changes the fingerprint
    meta = run_dir / METADATA_NAME
    meta.write_text(meta.read_text() + " ")
    assert fingerprint_of(run_dir, files) not in (fp, touched, gone)
    assert fingerprint_of(run_dir, files) == quick_fingerprint(run_dir)
    meta.unlink()
    assert fingerprint_of(run_dir, files) is None and quick_fingerprint(run_dir) is None


def test_fingerprint_of_typescript_failed_and_symlinked_metadata(root: Path) -> None:
    ts = make_ts_run(root)
    assert fingerprint_of(ts, ["results.parquet"]) == quick_fingerprint(ts)
    assert fingerprint_of(ts, []) != quick_fingerprint(ts)

    def failed(meta: dict[str, Any], _: Path) -> None:
        meta.update(status="failed", error="out of memory", artifacts=[])

    run_dir = make_run(root, run_id="failed-1", tables={}, mutate=failed)
    assert fingerprint_of(run_dir, []) == quick_fingerprint(run_dir)

    # metadata.json a symlink (inside the root): both follow it
    linked = make_run(root, run_id="linked-1")
    real = root / "elsewhere.json"
    os.replace(linked / METADATA_NAME, real)
    (linked / METADATA_NAME).symlink_to(real)
    assert fingerprint_of(linked, ["results.parquet"]) == quick_fingerprint(linked)
    result = validate_run_dir(linked, root)
    assert isinstance(result, Valid) and result.run.fingerprint == quick_fingerprint(linked)


def test_validation_fingerprint_matches_for_odd_listings(root: Path) -> None:
    """The fingerprint stored with a valid run equals quick_fingerprint even when the
    TypeScript shape carries an extra "artifacts" field (read loosely by both)."""
    run_dir = make_ts_run(root, "ts-odd", mutate=lambda m, _: m.update(artifacts=[]))
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid)
    assert result.run.fingerprint == quick_fingerprint(run_dir)


def test_fast_schema_path_never_accepts_what_the_full_validator_rejects(root: Path) -> None:
    """The compiled (fastjsonschema) validator is trusted only when it says valid: for each
    tricky value at each field, "valid" from it must mean valid for the jsonschema one."""

    fast_v1, fast_ts = contract_schema._fast_validators()
    full_v1, full_ts = contract_schema._validators()
    values: list[Any] = [
        True,
        False,
        None,
        0,
        1,
        1.0,
        -1,
        2**70,
        1.5,
        float("nan"),
        float("inf"),
        "",
        "x",
        "1",
        "a\n",
        "x" * 300,
        [],
        [1],
        {},
        {"a": 1},
        {"name": ""},
        {"name": "n", "version": 1},
    ]

    def check(fast: Any, full: Any, doc: dict[str, Any]) -> None:
        try:
            fast(doc)
        except Exception:
            return  # the full validator decides: nothing to compare
        assert not list(full.iter_errors(doc)), doc

    data = write_parquet(root / "t.parquet", 3)
    base = v1_metadata("r1", "backtest", [artifact_entry("results.parquet", data, 3)])
    check(fast_v1, full_v1, base)
    fast_v1(base)  # the valid document passes the fast path
    for key in [*base, "metrics", "extra", "$schema"]:
        for value in values:
            doc = json.loads(json.dumps(base))
            doc[key] = value
            check(fast_v1, full_v1, doc)
            for sub in ("producer", "git"):
                if key in ("name", "version", "commit", "branch", "dirty"):
                    doc = json.loads(json.dumps(base))
                    doc[sub][key] = value
                    check(fast_v1, full_v1, doc)
            doc = json.loads(json.dumps(base))
            doc["metrics"] = {"m": value}
            check(fast_v1, full_v1, doc)
    for key in ["name", "file", "format", "rows", "bytes", "sha256", "extra"]:
        for value in values:
            doc = json.loads(json.dumps(base))
            doc["artifacts"][0][key] = value
            check(fast_v1, full_v1, doc)
    ts = {
        "run_id": "r1",
        "backtest_type": "policy",
        "table_name": "t",
        "rows": 3,
        "created_at_utc": "2024-05-01T12:00:00Z",
        "parquet_file": "t.parquet",
    }
    fast_ts(ts)
    for key in [*ts, "parquet_path", "extra"]:
        for value in values:
            check(fast_ts, full_ts, {**ts, key: value})


# --------------------------------------------------------------------------- iter_run_dirs


def test_walk_run_dirs_gives_paths_and_metadata_lstat(root: Path) -> None:
    made = [_meta(root / "backtest" / f"r{i}") for i in range(3)]
    walked = list(walk_run_dirs(root))
    assert [p for p, _ in walked] == [str(d) for d in made] == list(iter_run_dir_paths(root))
    assert list(iter_run_dirs(root)) == made
    for path, st in walked:
        assert st == os.lstat(os.path.join(path, METADATA_NAME))


def _meta(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / METADATA_NAME).write_text("{}")
    return d


def test_iter_run_dirs_layout(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {
        _meta(root / "backtest" / "r1"),
        _meta(root / "backtest" / "r2"),
        _meta(root / "nested" / "a" / "b" / "r3"),
        _meta(root / "optimize" / "r4"),
    }
    _meta(root / "backtest" / "r1" / "sub" / "inner")  # inside a run dir: not descended into
    _meta(root / ".hidden" / "r5")
    _meta(root / "backtest" / ".r6")
    _meta(root / "backtest" / "r7.partial")
    _meta(root / "backtest" / "r8.tmp")
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "file.txt").write_text("not a dir")
    (root / "backtest" / "r9").mkdir()
    (root / "backtest" / "r9" / METADATA_NAME).mkdir()  # broken, but a run dir: validator says why
    expected.add(root / "backtest" / "r9")
    (root / "loop").symlink_to(root / "nested", target_is_directory=True)  # not followed
    outside_run = _meta(tmp_path / "outside" / "r10")
    (root / "ext").symlink_to(outside_run.parent, target_is_directory=True)
    (root / "extrun").symlink_to(outside_run, target_is_directory=True)

    found = list(iter_run_dirs(root))
    assert len(found) == len(set(found))
    assert set(found) == expected
    assert all(p.is_absolute() for p in found)

    monkeypatch.chdir(tmp_path)
    assert set(iter_run_dirs(Path("artifacts"))) == expected  # absolute even from a relative root


def test_iter_run_dirs_empty_and_missing_root(root: Path) -> None:
    assert list(iter_run_dirs(root)) == []
    assert list(iter_run_dirs(root / "missing")) == []
    _meta(root)  # the root itself is never a run dir
    assert list(iter_run_dirs(root)) == []


def test_iter_run_dirs_finds_every_run_once(root: Path) -> None:
    made = {_meta(root / f"type{i % 3}" / f"run{i:04d}") for i in range(300)}
    found = list(iter_run_dirs(root))
    assert len(found) == 300 and set(found) == made


# --------------------------------------------------------------------------- is_ignored


@pytest.mark.parametrize(
    ("rel", "ignored"),
    [
        ("backtest/run-1", False),
        ("backtest/run-1/metadata.json", False),
        ("backtest/run-1/results.parquet", False),
        ("", False),
        (".staging/run-1", True),
        ("backtest/.run-1/metadata.json", True),
        ("backtest/run-1/.metadata.json.swp", True),
        ("backtest/run-1/metadata.json.tmp", True),
        ("backtest/run-1/results.parquet.partial", True),
        ("backtest/run-1.partial/metadata.json", True),
        ("backtest/run-1/x.tmp/results.parquet", True),
        ("backtest/run.tmpfoo", False),
        ("../elsewhere/run", True),
    ],
)
def test_is_ignored(root: Path, rel: str, ignored: bool) -> None:
    assert is_ignored(root, root / rel if rel else root) is ignored


def test_is_ignored_outside_and_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "backtest").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert is_ignored(real, Path("/etc/passwd"))
    assert is_ignored(real, tmp_path / "realx" / "run")
    assert not is_ignored(link, real / "backtest")  # same place, reached through the symlink
    assert is_ignored(link, real / "backtest" / ".tmpdir")


def _doc_block(lang: str, heading: str) -> str:
    text = (REPO / "docs" / "contract.md").read_text()
    section = text[text.index(heading) :]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"no ```{lang} block after {heading!r} in docs/contract.md"
    return match.group(1)


def test_doc_python_snippet_publishes_a_valid_run(root: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(_doc_block("python", "### Python"), namespace)  # the documented helper, verbatim
    run_dir = root / "backtest" / "py-run-1"
    data = write_parquet(run_dir / "results.parquet", 4)
    meta = v1_metadata("py-run-1", "backtest", [artifact_entry("results.parquet", data, 4)])
    namespace["publish_metadata"](str(run_dir), meta)
    assert sorted(p.name for p in run_dir.iterdir()) == ["metadata.json", "results.parquet"]
    assert isinstance(validate_run_dir(run_dir, root), Valid)


def test_doc_shell_snippet_publishes_a_valid_run(root: Path, tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("bash") is None or shutil.which("sha256sum") is None:
        pytest.skip("bash and coreutils are needed to run the documented shell example")
    write_parquet(tmp_path / "results.parquet", 5)
    subprocess.run(
        ["bash", "-euc", _doc_block("sh", "### Shell")],
        cwd=tmp_path,
        env={**os.environ, "RUN_ID": "sh-run-1"},
        check=True,
        timeout=60,
    )
    run_dir = root / "backtest" / "sh-run-1"
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.artifacts[0].rows == 5
    assert result.run.producer == "my-script"
