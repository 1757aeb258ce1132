"""Garbage collection of superseded generations: after their grace, and only while no reader
holds their views file."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from .generation import gen_dir, gens
from .layout import MANIFEST, VIEWS_NAME, locked


def collect(
    exports_dir: Path, current: int, *, grace_s: float, pins: Mapping[int, int], limit: int
) -> int:
    """Remove generations below ``current`` superseded more than ``grace_s`` ago whose views
    file no process holds open (F_GETLK; ``pins``: this process's readers per generation, which
    F_GETLK does not report), at most ``limit``; returns how many."""
    found = gens(exports_dir)
    now = time.time()
    removed = 0
    for i, gen in enumerate(found):
        if gen >= current:
            break
        try:  # superseded when the next one was published (its manifest written)
            superseded_at = (gen_dir(exports_dir, found[i + 1]) / MANIFEST).stat().st_mtime
        except FileNotFoundError:
            superseded_at = now
        if now - superseded_at < grace_s:
            break  # later ones were superseded even more recently
        gdir = gen_dir(exports_dir, gen)
        if pins.get(gen) or locked(gdir / VIEWS_NAME):
            continue
        shutil.rmtree(gdir, ignore_errors=True)
        removed += 1
        if removed >= limit:
            break
    return removed
