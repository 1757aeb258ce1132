"""The publication's layout on disk and its records: names, the manifest, segments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CatalogMissingError
from ..fsutil import lock_holder

GEN_DIR = "gen"
STORE_DIR = ".store"
CURRENT = "current"
VIEWS_NAME = "bus.duckdb"
PADS_NAME = "views-pads.json"  #: in STORE_DIR: the views files' paddings (.views.ViewsWriter)
VIEWS_VERSION = 1  #: bumped when view_statements changes: every slot's views are made again
MANIFEST = "manifest.json"
STORAGE_VERSION = "v1.2.0"  #: readable by DuckDB 1.2 and newer (the CLI users get from pip)
GRACE_S = 120.0  #: a superseded generation stays at least this long (and while a reader holds it)
MAX_SEGMENTS = 8  #: a catalog table with more segments than this is compacted
MERGE_FAN = 32  #: segments one merge takes at most (like-sized ones)
COMPACTION_ROUNDS = 8  #: merges one compaction call commits at most
GC_INTERVAL_S = 1.0
GC_BATCH = 20  #: generations one collection removes at most (≈ 5 ms each)

#: The catalog tables readers see, with the key whose newest ``_seq`` version is live.
CATALOG_TABLES: dict[str, str] = {
    "runs_d": "run_id",
    "artifacts_f": "run_id",  # the rows of the run's newest artifact write (``_aseq``)
    "rejections_f": "run_dir",
}
HIDDEN = ("_seq", "_aseq")


def current_generation(exports_dir: Path) -> Path:
    """The directory of the current generation, resolved once: read files below it."""
    link = Path(exports_dir) / CURRENT
    try:
        return Path(os.path.realpath(link, strict=True))
    except OSError as exc:
        raise CatalogMissingError(
            f"nothing published in {exports_dir} yet: start the daemon (make run) or run "
            "`quantbot-bus sync`"
        ) from exc


@dataclass
class Segment:
    name: str  # file name in the store (unique, never reused)
    rows: int
    max_seq: int


@dataclass
class Manifest:
    gen: int = 0
    catalog_id: str = ""
    seq: int = -1  # catalog rows with _seq <= seq are published
    catalog: dict[str, list[Segment]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # export name -> store file name
    published_at: float = 0.0
    views_key: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "gen": self.gen,
            "catalog_id": self.catalog_id,
            "seq": self.seq,
            "catalog": {t: [s.__dict__ for s in segs] for t, segs in self.catalog.items()},
            "files": self.files,
            "published_at": self.published_at,
            "views_key": self.views_key,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(
            gen=int(data["gen"]),
            catalog_id=str(data["catalog_id"]),
            seq=int(data["seq"]),
            catalog={
                str(t): [Segment(str(s["name"]), int(s["rows"]), int(s["max_seq"])) for s in segs]
                for t, segs in data["catalog"].items()
            },
            files={str(k): str(v) for k, v in data.get("files", {}).items()},
            published_at=float(data.get("published_at", 0.0)),
            views_key=str(data.get("views_key", "")),
        )


@dataclass
class Published:
    """What one publication did."""

    gen: int
    ms: float
    bytes_written: int
    rows: int


def locked(path: Path) -> bool:
    """Whether another process holds a lock on ``path`` (a reader of that views file)."""
    return lock_holder(path) is not None
