"""The growth scenario: the registration path's per-run cost and bytes per publication on
buses of growing size (1k -> 100k), against the baseline's."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from quantbot_bus.config import Config

from .. import baseline as bl
from .. import datagen
from ..common import Result, median, verdict
from .context import Ctx, _k, _mb
from .datasets import _new_run, baseline_db, ensure_bus, ensure_large

#: One run at a time in growth: the pause between two (an idle daemon's pace, not a burst).
REP_SPACING_S = 0.25


def _exports_files(cfg: Config) -> dict[int, tuple[str, int, int, int]]:
    """inode -> (path below exports/, size, mtime_ns, bytes allocated) of every file under
    ``exports/``."""
    out: dict[int, tuple[str, int, int, int]] = {}
    base = cfg.exports_dir
    for dirpath, _dirs, files in os.walk(base):
        for f in files:
            path = os.path.join(dirpath, f)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            out[st.st_ino] = (
                os.path.relpath(path, base),
                st.st_size,
                st.st_mtime_ns,
                st.st_blocks * 512,
            )
    return out


def _written_since(
    before: dict[int, tuple[str, int, int, int]], after: dict[int, tuple[str, int, int, int]]
) -> dict[str, int]:
    """Bytes of the files under ``exports/`` that are new or were rewritten (an inode not seen
    before, or another size or mtime), by kind: catalog segments, views files, other; and
    ``allocated``, what they take on disk (views files are sparse)."""
    out = {"catalog": 0, "views": 0, "other": 0, "allocated": 0}
    for ino, (rel, size, mtime, alloc) in after.items():
        old = before.get(ino)
        if old is not None and old[1:3] == (size, mtime):
            continue
        if "/catalog/" in f"/{rel}":
            kind = "catalog"
        elif rel.endswith(".duckdb"):
            kind = "views"
        else:
            kind = "other"
        out[kind] += size
        out["allocated"] += alloc
    return out


def _timed(record: list[float], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, appending how long each call took (ms) to ``record``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record.append((time.perf_counter() - t) * 1000)

    return wrapper


def _register_cost(ctx: Ctx, cfg: Config, reps: int) -> dict[str, Any]:
    """Per-run cost of the daemon's path with the catalog at its size, in this process through
    :class:`quantbot_bus.pipeline.Bus` (daemon stopped): ``examine`` (validate) + ``commit``
    (``apply_batch`` in one transaction, then the publication), one new run at a time
    (:data:`REP_SPACING_S` apart, after an untimed warm-up); and the bytes each publication
    added on disk (files under ``exports/`` not there or different before: the catalog
    segments, its views file, the manifest).

    The Bus is opened with the daemon's role, so the publication works as in the daemon: the
    next generation (links + views file) is made ahead by a background thread after each
    publication, off the path to readers; its time is reported apart (``prepare_ms``)."""
    from quantbot_bus.pipeline import Bus

    with Bus.open(cfg, role="daemon") as bus:
        assert bus.catalog is not None
        first = bus.publish(force=True)  # this process's first generation (untimed)
        # Untimed warm-up, as in a running daemon (the first publications of a process list
        # the export tables and make the next generation ahead).
        for _ in range(2):
            bus.commit(bus.examine([_new_run(ctx, cfg)]).batch)
            time.sleep(REP_SPACING_S)
        pubs: list[Any] = []
        apply_ms: list[float] = []
        prepare_ms: list[float] = []
        publish = bus.publication.publish

        def recording(*args: Any, **kwargs: Any) -> Any:
            p = publish(*args, **kwargs)
            pubs.append(p)
            return p

        bus.publication.publish = recording  # type: ignore[method-assign]
        bus.catalog.apply_batch = _timed(apply_ms, bus.catalog.apply_batch)  # type: ignore[method-assign]
        prepare = getattr(bus.publication, "_prepare_next", None)
        if prepare is not None:  # the made-ahead step (internal; only timed when present)
            bus.publication._prepare_next = _timed(prepare_ms, prepare)  # type: ignore[method-assign]
        parts: dict[str, list[float]] = {
            "examine": [],
            "apply": [],
            "publish": [],
            "swap": [],
            "total": [],
            "bytes": [],
            "segment_bytes": [],
            "views_bytes": [],
            "other_bytes": [],
            "allocated_bytes": [],
        }
        prev = _exports_files(cfg)
        for _ in range(reps):
            run_dir = _new_run(ctx, cfg)
            pubs.clear()
            apply_ms.clear()
            t0 = time.perf_counter()
            outcome = bus.examine([run_dir])
            t1 = time.perf_counter()
            result = bus.commit(outcome.batch)
            t2 = time.perf_counter()
            assert result.registered and bus.degraded is None, (outcome, result, bus.degraded)
            assert pubs and pubs[-1] is not None, "commit published nothing"
            pub = pubs[-1]
            # the pause between two runs; then what this publication (and the generation made
            # ahead after it) wrote
            time.sleep(REP_SPACING_S)
            cur = _exports_files(cfg)
            new = _written_since(prev, cur)
            prev = cur
            parts["examine"].append((t1 - t0) * 1000)
            parts["apply"].append(apply_ms[-1])
            parts["publish"].append((t2 - t1) * 1000 - apply_ms[-1])
            parts["swap"].append(pub.ms)
            parts["total"].append((t2 - t0) * 1000)
            parts["bytes"].append(float(new["catalog"] + new["views"] + new["other"]))
            parts["allocated_bytes"].append(float(new["allocated"]))
            parts["segment_bytes"].append(float(pub.bytes_written))
            parts["views_bytes"].append(float(new["views"]))
            parts["other_bytes"].append(float(new["other"]))
        counts = bus.counts()
    out: dict[str, Any] = {k: round(median(v), 2) for k, v in parts.items()}
    out["prepare_ms"] = round(median(prepare_ms), 1) if prepare_ms else None
    out["total_all_ms"] = [round(x, 1) for x in parts["total"]]
    out["bytes_all"] = [int(x) for x in parts["bytes"]]
    out["bytes_max"] = int(max(parts["bytes"]))
    out["runs"] = counts.get("runs")
    out["first_publish"] = None if first is None else first.__dict__
    return out


def _baseline_cost(ctx: Ctx, n: int, reps: int) -> dict[str, Any]:
    db = baseline_db(ctx, n)
    work = db.parent
    root = work / "artifacts"
    d = bl.BaselineDaemon(root, db, work / "exports")
    d.load_seen()
    ms = []
    for _ in range(reps):
        run_dir = datagen.make_run(root, ctx.tpl, ctx.new_index(), prefix="base")
        done = d.process_one(run_dir)
        assert done is not None
        ms.append(done.ms)
    return {"median_ms": round(median(ms), 1), "ms": [round(x, 1) for x in ms]}


def growth(ctx: Ctx) -> None:
    """Per-run cost of the registration path (examine + commit incl. publication) on the
    daemon-built buses of growing size, one new run at a time; the baseline's per-run cost on
    seed-style catalogs of the same sizes."""
    reps = 5 if ctx.quick else 8
    labels = ["small", "main", "large"]
    ours: dict[str, dict[str, Any]] = {}
    theirs: dict[str, dict[str, Any]] = {}
    for label in labels:
        cfg = ensure_large(ctx) if label == "large" else ensure_bus(ctx, label)
        n = ctx.sizes[label]
        ours[label] = o = _register_cost(ctx, cfg, reps)
        theirs[label] = t = _baseline_cost(ctx, n, max(3, reps // 2))
        ctx.add(
            Result(
                "growth",
                f"per-run cost at {_k(n)} registered",
                o["total"],
                "ms",
                "(see ratio)",
                "INFO",
                o,
                f"examine {o['examine']} + apply {o['apply']} + publish {o['publish']} ms "
                f"(median of {reps}; {o['runs']:,} runs; next generation made ahead off the "
                f"path: {o['prepare_ms']} ms); baseline {t['median_ms']} ms/run "
                f"({1000 / t['median_ms']:.1f} runs/s)",
            )
        )
    lo, hi = labels[0], labels[-1]
    ratio = ours[hi]["total"] / ours[lo]["total"]
    b_ratio = theirs[hi]["median_ms"] / theirs[lo]["median_ms"]
    nlo, nhi = _k(ctx.sizes[lo]), _k(ctx.sizes[hi])
    ctx.add(
        Result(
            "growth",
            f"ratio {nhi}/{nlo}",
            ratio,
            "x",
            "<= 1.3",
            verdict(ratio <= 1.3),
            {"baseline_ratio": round(b_ratio, 2)},
            f"baseline ratio {b_ratio:.1f}x (same run)",
        )
    )
    big = ours[hi]
    ctx.add(
        Result(
            "growth",
            f"bytes per published batch of 1 run at {nhi}",
            big["bytes_max"] / 1e6,
            "MB",
            "<= 1 MB",
            verdict(big["bytes_max"] <= 1_000_000),
            {"bytes_all": big["bytes_all"]},
            f"largest of {reps} publications (median {_mb(big['bytes'])}): new or rewritten "
            f"files under exports/; medians: catalog segments {_mb(big['segment_bytes'])} "
            f"(Published.bytes_written), views file {_mb(big['views_bytes'])}, other "
            f"(manifest) {_mb(big['other_bytes'])}; {_mb(big['allocated_bytes'])} allocated on "
            "disk (sparse views file); the rest are hard links",
        )
    )
