"""Hostile and malformed run directories (issue 7): the validator answers, never raises or hangs.

Property tests run 200 examples each by default and 5,000 with ``QUANTBOT_BUS_SOAK=1``.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from builders import (
    SOAK,
    V1_REQUIRED,
    assert_invalid,
    crafted_parquet,
    make_run,
    make_ts_run,
    v1_metadata,
    write_metadata,
    write_parquet,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantbot_bus.contract import (
    MAX_METADATA_BYTES,
    METADATA_NAME,
    RUN_ID_RE,
    Incomplete,
    Invalid,
    Valid,
    iter_run_dirs,
    quick_fingerprint,
    validate_run_dir,
)

PROPERTY = settings(
    max_examples=5000 if SOAK else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _replace_file(run_dir: Path, name: str = "results.parquet") -> Path:
    path = run_dir / name
    path.unlink()
    return path


# --------------------------------------------------------------------------- metadata.json itself


def test_metadata_json_is_a_directory(root: Path) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).unlink()
    (run_dir / METADATA_NAME).mkdir()
    assert_invalid(validate_run_dir(run_dir, root), "metadata.json is a directory")


def test_metadata_json_9_mib(root: Path) -> None:
    def pad(meta: dict[str, Any], _: Path) -> None:
        meta["params"]["padding"] = "x" * (9 * 1024 * 1024)

    run_dir = make_run(root, mutate=pad)
    size = (run_dir / METADATA_NAME).stat().st_size
    assert size > MAX_METADATA_BYTES
    assert_invalid(
        validate_run_dir(run_dir, root),
        f"metadata.json is {size} bytes, over the 8388608 byte (8 MiB) limit",
    )


def test_metadata_json_50_mb_sparse(root: Path) -> None:
    run_dir = make_run(root)
    with (run_dir / METADATA_NAME).open("r+b") as f:
        f.truncate(50 * 1000 * 1000)  # sparse: proves the size is checked before reading
    assert_invalid(validate_run_dir(run_dir, root), "8 MiB")


@pytest.mark.parametrize("depth", [100_000, 1_000])
def test_deeply_nested_json(root: Path, depth: int) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).write_text("[" * depth + "]" * depth)
    assert_invalid(validate_run_dir(run_dir, root), "nested")


def test_nesting_inside_params_limited(root: Path) -> None:
    def nest(meta: dict[str, Any], _: Path) -> None:
        value: Any = 1
        for _i in range(100):
            value = {"k": value}
        meta["params"]["deep"] = value

    assert_invalid(
        validate_run_dir(make_run(root, mutate=nest), root),
        "nested more than 64 levels deep",
        "params.deep.k",
    )


def test_metadata_json_fifo_does_not_hang(root: Path) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).unlink()
    os.mkfifo(run_dir / METADATA_NAME)
    assert_invalid(validate_run_dir(run_dir, root), "metadata.json is a FIFO")
    assert quick_fingerprint(run_dir) is not None  # stat only, never opened


@pytest.mark.parametrize(
    "text",
    [
        '{"schema_version": 1, "run_id": "run-1", "params": {"x": "\\ud800"}}',
        '{"schema_version": 1, "run_id": "run-1", "params": {"\\udcff": 1}}',
        '{"\\udcff": 1}',
    ],
)
def test_lone_surrogates_rejected(root: Path, text: str) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).write_text(text)
    assert_invalid(validate_run_dir(run_dir, root), "lone surrogate")


def test_integer_with_too_many_digits(root: Path) -> None:
    run_dir = make_run(root)
    (run_dir / METADATA_NAME).write_text('{"rows": ' + "9" * 5000 + "}")
    assert_invalid(validate_run_dir(run_dir, root), "metadata.json cannot be parsed")


def test_metric_too_large_for_a_float(root: Path) -> None:
    def big(meta: dict[str, Any], _: Path) -> None:
        meta["metrics"]["huge"] = 10**400

    assert_invalid(validate_run_dir(make_run(root, mutate=big), root), "too large for a 64-bit")


def test_nan_metric_is_tolerated(root: Path) -> None:
    def nan(meta: dict[str, Any], _: Path) -> None:
        meta["metrics"]["sharpe"] = float("nan")

    result = validate_run_dir(make_run(root, mutate=nan), root)
    assert isinstance(result, Valid), result
    assert result.run.metrics["sharpe"] != result.run.metrics["sharpe"]


# --------------------------------------------------------------------------- special files


def test_fifo_named_parquet_does_not_hang(root: Path) -> None:
    def fifo(meta: dict[str, Any], run_dir: Path) -> None:
        os.mkfifo(_replace_file(run_dir))
        meta["artifacts"][0].update(bytes=None, sha256=None)

    assert_invalid(
        validate_run_dir(make_run(root, mutate=fifo), root),
        "artifact 'results' (file 'results.parquet') is a FIFO (named pipe), not a regular",
    )


def test_socket_named_parquet(root: Path) -> None:
    # AF_UNIX paths are limited to ~108 bytes: bind in a short temp dir, then move the socket in
    short = Path(tempfile.mkdtemp(prefix="qb"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(short / "s"))

        def sockfile(meta: dict[str, Any], run_dir: Path) -> None:
            os.rename(short / "s", _replace_file(run_dir))

        result = validate_run_dir(make_run(root, mutate=sockfile), root)
        assert_invalid(result, "is a socket, not a regular")
    finally:
        sock.close()
        os.rmdir(short)


def test_device_file_named_parquet(root: Path) -> None:
    def device(meta: dict[str, Any], run_dir: Path) -> None:
        os.mknod(_replace_file(run_dir), 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero

    try:
        run_dir = make_run(root, mutate=device)
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD (not running as root)")
    assert_invalid(validate_run_dir(run_dir, root), "is a character device, not a regular")


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/stdin", "/proc/self/mem", "/etc/passwd"])
def test_symlink_to_system_files(root: Path, target: str) -> None:
    def link(meta: dict[str, Any], run_dir: Path) -> None:
        _replace_file(run_dir).symlink_to(target)

    assert_invalid(
        validate_run_dir(make_run(root, mutate=link), root), "outside the artifacts root"
    )


def test_symlink_loop(root: Path) -> None:
    def loop(meta: dict[str, Any], run_dir: Path) -> None:
        _replace_file(run_dir).symlink_to("results.parquet")

    result = validate_run_dir(make_run(root, mutate=loop), root)
    assert_invalid(result, "artifact 'results'", "symbolic link that does not resolve")


def test_too_many_artifacts_and_long_metric_names(root: Path) -> None:
    def many(meta: dict[str, Any], _: Path) -> None:
        meta["artifacts"] = [meta["artifacts"][0]] * 10_001

    assert_invalid(
        validate_run_dir(make_run(root, mutate=many), root),
        "field 'artifacts' must be a list of artifact objects (at most 10000), "
        "got a list of 10001 items",
    )

    def long_name(meta: dict[str, Any], _: Path) -> None:
        meta["metrics"]["x" * 300] = 1

    assert_invalid(
        validate_run_dir(make_run(root, run_id="run-2", mutate=long_name), root),
        "metric names of at most 256 characters",
        "(300 characters)",
    )


# --------------------------------------------------------------------------- names


def test_non_utf8_file_name_in_run_dir_is_ignored(root: Path) -> None:
    def stray(meta: dict[str, Any], run_dir: Path) -> None:
        with open(os.fsencode(run_dir) + b"/\xff\xfe-stray.parquet", "wb") as f:
            f.write(b"junk")

    run_dir = make_run(root, mutate=stray)
    assert isinstance(validate_run_dir(run_dir, root), Valid)
    assert quick_fingerprint(run_dir) is not None


def test_non_utf8_file_name_listed(root: Path) -> None:
    def listed(meta: dict[str, Any], run_dir: Path) -> None:
        name = os.fsdecode(b"\xff.parquet")  # '\udcff.parquet' once decoded
        os.rename(run_dir / "results.parquet", run_dir / name)
        meta["artifacts"][0]["file"] = name

    run_dir = make_run(root, mutate=listed)
    assert_invalid(validate_run_dir(run_dir, root), "lone surrogate", "artifacts[0].file")


@pytest.mark.parametrize("parent", [b"backtest", b"back\xfftest"])
def test_non_utf8_run_directory_name(root: Path, tmp_path: Path, parent: bytes) -> None:
    good = make_run(tmp_path / "staging")
    run_id = "run-1" if b"\xff" in parent else "run-\udcff"
    bad = Path(os.fsdecode(os.fsencode(root) + b"/" + parent + b"/" + os.fsencode(run_id)))
    bad.parent.mkdir(parents=True)
    os.rename(good, bad)  # pyarrow itself cannot write to such a path
    assert list(iter_run_dirs(root)) == [bad]
    result = assert_invalid(validate_run_dir(bad, root), "is not valid UTF-8; rename it")
    assert "\\udcff" in result.reason or "\\xff" in result.reason


def test_duplicated_run_id_under_two_run_types(root: Path) -> None:
    # each directory is valid on its own; refusing the second one is the catalog's job
    a = make_run(root, "backtest", "dup-1")
    b = make_run(root, "optimize", "dup-1")
    ra, rb = validate_run_dir(a, root), validate_run_dir(b, root)
    assert isinstance(ra, Valid) and isinstance(rb, Valid)
    assert ra.run.run_id == rb.run.run_id and ra.run.run_dir != rb.run.run_dir


# --------------------------------------------------------------------------- billion-row footers


def _crafted(num_rows: int, rg_rows: int | None, declared: int) -> Any:
    def craft(meta: dict[str, Any], run_dir: Path) -> None:
        data = crafted_parquet(num_rows, rg_rows)
        (run_dir / "results.parquet").write_bytes(data)
        meta["artifacts"][0].update(rows=declared, bytes=len(data), sha256=None)

    return craft


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_billion_rows_footer_compared_not_read(root: Path) -> None:
    run_dir = make_run(root, mutate=_crafted(10**9, 10**9, declared=10))
    assert (run_dir / "results.parquet").stat().st_size < 200
    before = _maxrss_mib()
    assert_invalid(
        validate_run_dir(run_dir, root),
        "has 1000000000 rows in its Parquet footer but metadata.json declares 10",
    )
    assert _maxrss_mib() - before < 100  # nothing of the size of a billion rows was allocated


def test_billion_rows_footer_matching_declaration(root: Path) -> None:
    run_dir = make_run(root, mutate=_crafted(10**9, 10**9, declared=10**9))
    before = _maxrss_mib()
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.artifacts[0].rows == 10**9
    assert json.loads(result.run.artifacts[0].arrow_schema) == [
        {"name": "x", "type": "int64", "nullable": False}
    ]
    assert _maxrss_mib() - before < 100


def test_footer_rows_disagree_with_row_groups(root: Path) -> None:
    run_dir = make_run(root, mutate=_crafted(10**9, None, declared=10**9))
    assert_invalid(
        validate_run_dir(run_dir, root),
        "Parquet footer is inconsistent: it says 1000000000 rows but its row groups hold 0",
    )


# --------------------------------------------------------------------------- property tests

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None), max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
# keys and values that exercise the real schema, not only random noise
FIELDS = [
    *V1_REQUIRED,
    "git",
    "host",
    "metrics",
    "error",
    "backtest_type",
    "table_name",
    "parquet_file",
    "rows",
    "created_at_utc",
]
file_strings = st.one_of(
    st.text(st.characters(codec=None), max_size=40),
    st.sampled_from(
        [
            "results.parquet",
            "../results.parquet",
            "/etc/passwd",
            "sub/results.parquet",
            ".x",
            "a.tmp",
            "link.parquet",
            "fifo.parquet",
            "dir.parquet",
            "garbage.parquet",
        ]
    ),
)


def _check_result(result: Any) -> None:
    assert isinstance(result, Valid | Incomplete | Invalid)
    if isinstance(result, Valid):
        run = result.run
        assert RUN_ID_RE.fullmatch(run.run_id)
        for art in run.artifacts:
            parts = art.file.split("/")
            assert ".." not in parts and not art.file.startswith("/")
            assert not any(p.startswith(".") for p in parts)
    else:
        result.reason.encode("utf-8")
        assert result.reason


def _shaped_dir(base: Path) -> tuple[Path, Path]:
    """A root with one run directory 'run-1' holding files of every awkward kind."""
    root = base / "root"
    run_dir = root / "backtest" / "run-1"
    run_dir.mkdir(parents=True)
    write_parquet(run_dir / "results.parquet", 3)
    write_parquet(run_dir / "sub" / "results.parquet", 2)
    (run_dir / "garbage.parquet").write_bytes(b"PAR1" + b"\x00" * 40 + b"PAR1")
    (run_dir / "dir.parquet").mkdir()
    os.mkfifo(run_dir / "fifo.parquet")
    (run_dir / "link.parquet").symlink_to("/etc/passwd")
    return root, run_dir


@PROPERTY
@given(doc=json_values)
def test_property_arbitrary_json_document(doc: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = _shaped_dir(Path(tmp))
        (run_dir / METADATA_NAME).write_text(json.dumps(doc), encoding="utf-8")
        _check_result(validate_run_dir(run_dir, root))
        assert quick_fingerprint(run_dir) is not None


@PROPERTY
@given(
    replacements=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
    drops=st.sets(st.sampled_from(FIELDS), max_size=3),
    file=file_strings,
    rows=st.one_of(st.none(), st.integers(min_value=-5, max_value=10), json_values),
    ts_shape=st.booleans(),
)
def test_property_mutated_documents(
    replacements: dict[str, Any], drops: set[str], file: str, rows: Any, ts_shape: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = _shaped_dir(Path(tmp))
        doc: dict[str, Any]
        if ts_shape:
            doc = {
                "run_id": "run-1",
                "backtest_type": "full",
                "table_name": "t",
                "rows": rows,
                "created_at_utc": "2024-05-01T12:00:00Z",
                "parquet_file": file,
            }
        else:
            doc = v1_metadata(
                "run-1",
                "backtest",
                [{"name": "t", "file": file, "format": "parquet", "rows": rows}],
            )
        doc.update(replacements)
        for key in drops:
            doc.pop(key, None)
        (run_dir / METADATA_NAME).write_text(json.dumps(doc), encoding="utf-8")
        result = validate_run_dir(run_dir, root)
        _check_result(result)
        fp = quick_fingerprint(run_dir)
        assert fp is not None
        if isinstance(result, Valid):
            assert result.run.fingerprint == fp


@PROPERTY
@given(raw=st.binary(max_size=300))
def test_property_arbitrary_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = _shaped_dir(Path(tmp))
        (run_dir / METADATA_NAME).write_bytes(raw)
        _check_result(validate_run_dir(run_dir, root))
        quick_fingerprint(run_dir)


@PROPERTY
@given(data=st.binary(max_size=2000), declared_bytes=st.one_of(st.none(), st.integers(0, 3000)))
def test_property_arbitrary_parquet_bytes(data: bytes, declared_bytes: int | None) -> None:
    """Random bytes (often starting/ending with PAR1) as the Parquet file: footer parsing of
    garbage is answered, never raised."""
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = _shaped_dir(Path(tmp))
        (run_dir / "results.parquet").write_bytes(b"PAR1" + data + b"PAR1" if data[:1] else data)
        doc = v1_metadata(
            "run-1",
            "backtest",
            [
                {
                    "name": "t",
                    "file": "results.parquet",
                    "format": "parquet",
                    "bytes": declared_bytes,
                }
            ],
        )
        write_metadata(run_dir, doc)
        _check_result(validate_run_dir(run_dir, root))


def test_typescript_run_is_found_by_scan(root: Path) -> None:
    run_dir = make_ts_run(root)
    assert list(iter_run_dirs(root)) == [run_dir]


# --------------------------------------------------------------------------- faults


def test_unexpected_failure_becomes_invalid(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: whatever breaks inside the validator is reported, never raised."""
    import quantbot_bus.contract.validate as validate

    run_dir = make_run(root)

    def boom(*args: Any) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(validate, "metadata_object", boom)
    assert_invalid(
        validate_run_dir(run_dir, root),
        "unexpected error while validating this run: RuntimeError: injected fault",
    )


def test_parquet_reader_failure_becomes_invalid(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    run_dir = make_run(root)

    def poison(*args: Any, **kwargs: Any) -> Any:
        raise SystemError("reader crashed")

    monkeypatch.setattr(pq, "read_metadata", poison)
    assert_invalid(
        validate_run_dir(run_dir, root),
        "the Parquet footer cannot be read (SystemError: reader crashed)",
    )


def test_run_directory_deleted_while_validated(root: Path) -> None:
    """A producer (thread) keeps creating and deleting the run while it is validated."""
    import shutil
    import threading

    stop = threading.Event()
    staged = make_run(root.parent / "staging")
    target = root / "backtest" / "run-1"
    target.parent.mkdir(parents=True)

    def churn() -> None:
        while not stop.is_set():
            shutil.copytree(staged, target)
            shutil.rmtree(target, ignore_errors=True)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    seen: set[type] = set()
    try:
        for _ in range(400):
            result = validate_run_dir(target, root)
            assert isinstance(result, Valid | Incomplete | Invalid)
            seen.add(type(result))
            quick_fingerprint(target)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert Incomplete in seen
