"""Readers in another process while syncs add and delete runs (rewriting every summary
file, compacting segments): a reader of the published files and one of the summary views never
fail and see only whole, published states."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from builders import PATH, add_path_run, sync

from quantbot_bus import exports
from quantbot_bus.config import Config
from quantbot_bus.exports import compaction

READER = textwrap.dedent(
    """
    import json, os, sys, time
    import pyarrow.parquet as pq
    from quantbot_bus.publication import current_generation
    exports_dir, stop_file = sys.argv[1], sys.argv[2]
    names = [n + ".parquet" for n in %r]
    reads = errors = 0
    seen_rows = set()
    gens = set()
    while not os.path.exists(stop_file):
        # Resolve `current` once per round and read everything below it. A generation never
        # changes and is kept while it can be read: no file of it may be missing or torn, and
        # reading a file by path (several opens: footer, then pages) is safe too.
        try:
            gen = current_generation(exports_dir)
        except Exception as exc:
            errors += 1
            print("ERROR current", type(exc).__name__, exc, file=sys.stderr)
            continue
        gens.add(gen.name)
        for name in names:
            try:
                table = pq.read_table(os.path.join(gen, "files", name))
                reads += 1
                if name == "runs.parquet":
                    seen_rows.add(table.num_rows)
            except Exception as exc:  # FileNotFoundError too: published before we started
                errors += 1
                print("ERROR", gen.name, name, type(exc).__name__, exc, file=sys.stderr)
        try:
            with open(os.path.join(exports_dir, "_export_status.json")) as fh:
                json.load(fh)
            reads += 1
        except Exception as exc:
            errors += 1
            print("ERROR status", type(exc).__name__, exc, file=sys.stderr)
        seg_dir = os.path.join(gen, "tables", "%s")
        try:
            segs = sorted(os.listdir(seg_dir))
        except Exception as exc:  # the table has live runs all along
            errors += 1
            print("ERROR", gen.name, "tables", type(exc).__name__, exc, file=sys.stderr)
            segs = []
        for seg in segs:
            if not seg.endswith(".parquet"):
                continue
            try:
                pq.read_table(os.path.join(seg_dir, seg))
                reads += 1
            except Exception as exc:  # a listed segment never vanishes from its generation
                errors += 1
                print("ERROR", gen.name, seg, type(exc).__name__, exc, file=sys.stderr)
    print(json.dumps({"reads": reads, "errors": errors, "generations": len(gens),
                      "runs_rows": sorted(seen_rows)}), flush=True)
    # Skip interpreter teardown: pyarrow's thread pool sometimes aborts there ("terminate
    # called without an active exception", seen 2 in ~20 runs); the reads are done and printed.
    os._exit(0)
    """
)


# Syncs (adding a run each; one in ``delete_every`` deletes one) while a reader reads: the fast
# suite's 10 still compact segments (MAX_SEGMENTS 3) and delete two runs under the reader, which
# reads thousands of times meanwhile; the soak makes 15.
@pytest.mark.parametrize(
    ("runs", "delete_every"),
    [
        pytest.param(10, 5, id="10-syncs"),
        pytest.param(15, 5, id="15-syncs", marks=pytest.mark.slow),
    ],
)
def test_concurrent_reader_never_sees_a_partial_export(
    bus: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: int, delete_every: int
) -> None:
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 3)  # compactions (file removals) happen too
    monkeypatch.setattr(compaction, "MERGE_FAN", 2)
    add_path_run(bus, "r000", n=200, seed=0)
    sync(bus)
    stop = tmp_path / "stop"
    script = tmp_path / "reader.py"
    script.write_text(READER % (list(exports.summary_names()), PATH))
    args = [str(script), str(bus.exports_dir), str(stop)]
    result = churn_while_reading(bus, args, stop, runs=runs, delete_every=delete_every)
    print(f"\n{result['reads']} reads during {runs} syncs")
    assert result["reads"] > 50
    # Every runs.parquet the reader saw was one a sync published: as many rows as there were
    # live runs after that sync (a deleted run left in it, or a torn file, would not match).
    seen = set(result["runs_rows"])
    assert seen and seen <= set(result["published"]), (sorted(seen), result["published"])


def churn_while_reading(
    cfg: Config, args: list[str], stop: Path, *, runs: int, delete_every: int
) -> dict[str, Any]:
    """Run a reader script (``python args...``) while syncs add ``runs`` runs, deleting an older
    one every ``delete_every``; stop it through the ``stop`` file; it must exit 0 and report no
    error. Returns the JSON it printed last, with ``published``: the number of live runs (run
    directories on disk) after the sync before the reader started and after each sync since."""

    def live_runs_on_disk() -> int:
        return sum(1 for d in (cfg.root / "backtest-path").iterdir() if d.is_dir())

    published = [live_runs_on_disk()]
    reader = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    try:
        for i in range(1, runs + 1):
            add_path_run(cfg, f"r{i:03d}", n=200, seed=i)
            if i % delete_every == 0:
                shutil.rmtree(cfg.root / "backtest-path" / f"r{i - delete_every + 2:03d}")
            sync(cfg)
            published.append(live_runs_on_disk())
    finally:
        stop.write_text("stop")
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == 0, err
    result["published"] = published
    return result


def test_view_readers_never_fail_while_refreshes_replace_files(
    bus: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader process querying the summary views through the snapshot while syncs add and
    delete runs (rewriting every summary file) sees no error and only whole states."""
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 3)  # compactions retire segment files too
    monkeypatch.setattr(compaction, "MERGE_FAN", 2)
    add_path_run(bus, "r000", n=200, seed=0)
    sync(bus)
    stop = tmp_path / "stop"
    script = tmp_path / "view_reader.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            from quantbot_bus import exports
            from quantbot_bus.config import load_config
            cfg = load_config(None, overrides={"root": sys.argv[1], "exports_dir": sys.argv[2],
                                               "state_dir": sys.argv[3]})
            reads = errors = 0
            seen = set()
            TABLES = %r
            while not os.path.exists(sys.argv[4]):
                try:
                    runs = exports.run_query(cfg, "SELECT count(*) FROM exports.runs").rows
                    lb = exports.run_query(
                        cfg, "SELECT sum(runs_seen) FROM exports.caller_leaderboard").rows
                    exports.run_query(cfg, "SELECT count(*) FROM exports.run_summaries")
                    if TABLES:
                        exports.run_query(
                            cfg, "SELECT count(*) FROM exports.backtest_call_path_metrics")
                    seen.add(runs[0][0])
                    reads += 1
                except Exception as exc:
                    errors += 1
                    print("ERROR", type(exc).__name__, exc, file=sys.stderr)
            print(json.dumps({"reads": reads, "errors": errors, "seen": sorted(seen)}), flush=True)
            os._exit(0)  # no teardown (see READER above)
            """
        )
        % (True,)
    )
    args = [str(script), str(bus.root), str(bus.exports_dir), str(bus.state_dir), str(stop)]
    result = churn_while_reading(bus, args, stop, runs=12, delete_every=4)
    assert result["reads"] > 20
    # Only whole states: every count the views answered is one a sync published.
    seen = set(result["seen"])
    assert seen and seen <= set(result["published"]), (sorted(seen), result["published"])
