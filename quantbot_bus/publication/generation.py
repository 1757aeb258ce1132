"""A generation directory ``gen/<N>/``: where it is, its links into the store, and the swap.

A generation is filled with hard links to the store's files (:func:`fill`, which adds and
removes only the difference, so the one made ahead is brought to a publication's contents
cheaply) and becomes current by :func:`swap`: ``current`` and ``bus.duckdb`` renamed over their
targets, ``current`` first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..fsutil import fsync_dir
from .layout import CURRENT, GEN_DIR, STORE_DIR, VIEWS_NAME, Manifest


def gen_dir(exports_dir: Path, gen: int) -> Path:
    """The directory of generation ``gen``."""
    return exports_dir / GEN_DIR / f"{gen:010d}"


def seg_path(exports_dir: Path, table: str, name: str) -> Path:
    """The store file of catalog segment ``name`` of ``table``."""
    return exports_dir / STORE_DIR / "catalog" / table / name


def gens(exports_dir: Path) -> list[int]:
    """The generations on disk, oldest first."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(exports_dir / GEN_DIR):
            if entry.name.isdigit():
                out.append(int(entry.name))
    return sorted(out)


def max_gen(exports_dir: Path) -> int:
    """The newest generation on disk (0 when there is none)."""
    found = gens(exports_dir)
    return found[-1] if found else 0


def tables_of(exports_dir: Path, gen: int) -> dict[str, list[Path]]:
    """The export tables of generation ``gen`` (its links keep the files alive)."""
    out: dict[str, list[Path]] = {}
    base = gen_dir(exports_dir, gen) / "tables"
    if base.is_dir():
        for d in sorted(base.iterdir()):
            out[d.name] = sorted(d.glob("*.parquet"))
    return out


def fill(
    exports_dir: Path, gdir: Path, m: Manifest, tables: Mapping[str, Sequence[Path]]
) -> tuple[list[str], dict[str, str]]:
    """Make ``gdir``'s links exactly ``m``'s catalog segments, ``tables`` and ``m``'s files
    (adding and removing only the difference); returns the table and file names."""
    want: dict[str, Path] = {}  # path relative to gdir -> the store file it links
    for table, segs in m.catalog.items():
        for seg in segs:
            want[f"catalog/{table}/{seg.name}"] = seg_path(exports_dir, table, seg.name)
    table_names = sorted(t for t, paths in tables.items() if paths)
    for table in table_names:
        for p in tables[table]:
            want[f"tables/{table}/{Path(p).name}"] = Path(p)
    file_names: dict[str, str] = {}
    for name, stored in sorted(m.files.items()):
        file_names[name] = f"{name}.{stored.rsplit('.', 1)[-1]}"
        want[f"files/{file_names[name]}"] = exports_dir / STORE_DIR / "files" / stored
    have = _prune(gdir, want)
    for rel, source in want.items():
        if rel not in have:
            dest = gdir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, dest)
    return table_names, file_names


def _prune(gdir: Path, want: Mapping[str, Path]) -> set[str]:
    """Unlink every entry of ``gdir`` that is not a link to the file ``want`` names for it (and
    the directories left empty); returns the entries kept."""
    have: set[str] = set()
    for top in ("catalog", "tables", "files"):
        base = gdir / top
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            rel = os.path.relpath(dirpath, gdir)
            for f in filenames:
                path = f"{rel}/{f}"
                full = os.path.join(dirpath, f)
                # kept only if it links the very file wanted (a rewritten export file
                # has the same name in the generation, another one in the store)
                if path in want and os.stat(full).st_ino == os.stat(want[path]).st_ino:
                    have.add(path)
                else:
                    os.unlink(full)
            if not filenames and not dirnames and dirpath != str(base):
                os.rmdir(dirpath)
    return have


def swap(exports_dir: Path, gdir: Path) -> None:
    """Point ``current`` and ``bus.duckdb`` at ``gdir``: a symlink and a link under temp
    names, each renamed over its target, then the directory fsynced."""
    token = secrets.token_hex(4)
    tmp_db = exports_dir / f".{VIEWS_NAME}.qbpub-{token}"
    tmp_cur = exports_dir / f".{CURRENT}.qbpub-{token}"
    try:
        os.link(gdir / VIEWS_NAME, tmp_db)
        os.symlink(f"{GEN_DIR}/{gdir.name}", tmp_cur)
        # current first: a crash between the two leaves bus.duckdb on the previous
        # generation (which the next start keeps: it is not above current)
        os.replace(tmp_cur, exports_dir / CURRENT)
        os.replace(tmp_db, exports_dir / VIEWS_NAME)
    finally:
        tmp_db.unlink(missing_ok=True)
        tmp_cur.unlink(missing_ok=True)
    fsync_dir(exports_dir)
