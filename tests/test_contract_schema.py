"""The run-directory contract, table-driven over real run directories and real Parquet: the JSON
Schema (shipped, valid, its fast path never looser than the full validator) and docs/contract.md's
examples and snippets."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from builders import V1_REQUIRED, artifact_entry, v1_metadata, write_metadata, write_parquet
from jsonschema import Draft202012Validator

from quantbot_bus.contract import Valid, load_run_schema, validate_run_dir
from quantbot_bus.contract import schema as contract_schema

REPO = Path(__file__).resolve().parents[1]


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


# --------------------------------------------------------------------------- the fast schema path


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


# --------------------------------------------------------------------------- doc snippets


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
