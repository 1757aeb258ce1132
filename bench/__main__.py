"""``python -m bench [--quick] [--only SCENARIO ...]``: run the benchmark suite (``make bench``).

Prints one line per figure (scenario, figure, target, PASS/MISS), writes the results with machine
facts to ``bench/results/<timestamp>.json`` (and ``latest.json`` for a full run,
``latest-quick.json`` for ``--quick``), and prints a Markdown table for bench/README.md.
Data lives in a temporary directory under ``/tmp`` (``--work-dir`` to choose), removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .common import Result, machine_info
from .scenarios import SCENARIOS, Ctx

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def markdown_table(results: list[Result]) -> str:
    lines = [
        "| scenario | figure | measured | target | verdict | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        val = (
            "n/a"
            if r.value is None
            else f"{r.value:,.3g}"
            if abs(r.value) < 100
            else f"{r.value:,.0f}"
        )
        lines.append(
            f"| {r.scenario} | {r.figure} | {val} {r.unit} | {r.target} | {r.status} | {r.note} |"
        )
    return "\n".join(lines)


#: What the bench's subprocesses import; compiled once before anything is timed.
_WARM_IMPORTS = (
    "import duckdb, pyarrow, pyarrow.parquet, structlog, click, watchdog.observers, "
    "watchdog.events, quantbot_bus.cli, quantbot_bus.daemon.supervisor, quantbot_bus.pipeline, "
    "quantbot_bus.publication, quantbot_bus.exports, quantbot_bus.contract, quantbot_bus.ops.doctor, "
    "bench.reader, bench.baseline"
)


def _bytecode_cache(work: Path) -> str:
    """Let the subprocesses (daemon, CLI, reader, baseline) cache their bytecode, as any
    installed Python does: an environment with ``PYTHONDONTWRITEBYTECODE`` set (this sandbox)
    would make each fresh process compile every module of quantbot_bus again (tens of ms per
    process; whole-process query times and startup would measure the compiler). The cache goes
    to the bench's work dir (``PYTHONPYCACHEPREFIX``), never into the source tree, and is
    filled once here, untimed."""
    was = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "quantbot_bus", "bench"],
        cwd=repo,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([sys.executable, "-c", _WARM_IMPORTS], cwd=repo, check=False)
    return (
        f"subprocesses cache bytecode in {work / 'pycache'} (PYTHONDONTWRITEBYTECODE was {was!r})"
    )


def _library_state() -> dict[str, object]:
    """The commit the library was measured at, and whether quantbot_bus/ had local changes."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout

    # not stripped: each porcelain line's status is its first three characters
    changed = [line[3:] for line in git("status", "--porcelain", "quantbot_bus").splitlines()]
    commit = git("rev-parse", "--short", "HEAD").strip()
    return {"commit": commit, "uncommitted_library_files": changed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the 1,000-run version (1-2 minutes)")
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable)",
    )
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where to put the data (default: a new /tmp dir)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args(argv)

    from quantbot_bus.log import configure_logging

    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="run-", dir=args.work_dir))
    else:
        work = Path(tempfile.mkdtemp(prefix="qbus-bench-"))
    inproc_log = (work / "in-process.log").open("w")
    configure_logging("warning", "json", stream=inproc_log)  # in-process library calls stay quiet

    def say(msg: str) -> None:
        print(msg, flush=True)

    names = args.only or list(SCENARIOS)
    ctx = Ctx(quick=args.quick, work=work, say=say)
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    machine["bytecode"] = _bytecode_cache(work)
    machine["library"] = _library_state()
    say(
        f"quantbot-bus bench ({'quick' if args.quick else 'full'}): {', '.join(names)}; data in {work}"
    )
    say(
        f"machine: {machine['nproc']} cores, python {machine['python']}, duckdb {machine['duckdb']}, load {machine['loadavg']}"
    )
    say(f"library: {machine['library']}")
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        for name in names:
            say(f"== {name}")
            t = time.perf_counter()
            try:
                SCENARIOS[name](ctx)
            except Exception as exc:  # noqa: BLE001 - report and carry on with the others
                tb = traceback.format_exc()
                ctx.add(
                    Result(
                        name,
                        "(scenario failed)",
                        None,
                        "",
                        "",
                        "ERROR",
                        {"traceback": tb},
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                    )
                )
                print(tb, file=sys.stderr)
            timings[name] = round(time.perf_counter() - t, 1)
    finally:
        inproc_log.close()
        total = time.perf_counter() - t_all
        machine["loadavg_end"] = __import__("os").getloadavg()
        doc = {
            "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "quick": args.quick,
            "scenarios": names,
            "total_s": round(total, 1),
            "scenario_s": timings,
            "machine": machine,
            "results": [r.as_dict() for r in ctx.results],
        }
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS_DIR / f"{stamp}{'-quick' if args.quick else ''}.json"
        text = json.dumps(doc, indent=2, default=str) + "\n"
        out.write_text(text)
        if not args.only:
            (RESULTS_DIR / ("latest-quick.json" if args.quick else "latest.json")).write_text(text)
        if args.keep:
            say(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say("")
    say(markdown_table(ctx.results))
    say(f"\n{len(ctx.results)} figures in {total:.0f}s; results: {out}")
    missed = [r for r in ctx.results if r.status in ("MISS", "ERROR")]
    if missed:
        say(f"{len(missed)} MISS/ERROR: " + "; ".join(f"{r.scenario}: {r.figure}" for r in missed))
    # A MISS is a measured figure (reported, not a crash); a scenario that could not run is.
    return 1 if any(r.status == "ERROR" for r in ctx.results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
