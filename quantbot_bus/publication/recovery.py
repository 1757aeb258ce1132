"""Loading the publication at start: the current generation's manifest, and removing what a
crash left half made (generations above the current one, ``.qbpub-*`` temp names, store files
no manifest names)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..log import get_logger
from .generation import gen_dir, gens, max_gen
from .layout import CURRENT, GEN_DIR, MANIFEST, STORE_DIR, Manifest

log = get_logger("quantbot_bus.publication")


def load(exports_dir: Path) -> Manifest:
    """The manifest of the generation ``current`` names (an empty one at the newest generation
    on disk when it cannot be read), after removing a crash's leftovers."""
    current: int | None = None
    try:
        target = os.readlink(exports_dir / CURRENT)
        current = int(Path(target).name)
        data = json.loads((exports_dir / GEN_DIR / Path(target).name / MANIFEST).read_text())
        manifest = Manifest.from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if current is not None or (exports_dir / CURRENT).is_symlink():
            log.warning("publication.unreadable", path=str(exports_dir / CURRENT), error=str(exc))
        manifest = Manifest(gen=current or max_gen(exports_dir))
    _remove_leftovers(exports_dir, manifest)
    return manifest


def _remove_leftovers(exports_dir: Path, manifest: Manifest) -> None:
    # generations above the current one were never published (killed mid-publication)
    for gen in gens(exports_dir):
        if gen > manifest.gen:
            shutil.rmtree(gen_dir(exports_dir, gen), ignore_errors=True)
    for tmp in exports_dir.glob(".*.qbpub-*"):
        tmp.unlink(missing_ok=True)
    # store files the manifest does not name are orphans (of a killed publication/merge)
    live = {s.name for segs in manifest.catalog.values() for s in segs}
    for table_dir in (exports_dir / STORE_DIR / "catalog").iterdir():
        for f in table_dir.glob("*.parquet"):
            if f.name not in live:
                f.unlink(missing_ok=True)
    files = set(manifest.files.values())
    for f in (exports_dir / STORE_DIR / "files").iterdir():
        if f.name not in files:
            f.unlink(missing_ok=True)
