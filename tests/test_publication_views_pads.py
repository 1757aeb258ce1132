"""The views files' padding remembered across processes (``.store/views-pads.json``): the next
process writes its views file once, with the installed file's header; a stale or unreadable
record costs writes, never a different header."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import make_run

from quantbot_bus import ingest
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config
from quantbot_bus.publication import Publication, views
from quantbot_bus.publication.layout import PADS_NAME, STORE_DIR
from quantbot_bus.publication.views import HEADER_BYTES


@pytest.fixture
def catalog(bus: Config) -> Iterator[Catalog]:
    for i in range(3):
        make_run(bus.root, run_id=f"run-{i}")
    with Catalog.open(bus.catalog_path) as cat:
        cat.apply_batch(ingest.full_scan(bus, cat).batch)
        yield cat


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The views files written (the real writer runs)."""
    written: list[Path] = []
    real = views.write_views

    def counted(con: object, path: Path, *args: object, **kw: object) -> None:
        written.append(path)
        real(con, path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(views, "write_views", counted)
    return written


def publish_once(cat: Catalog, exports_dir: Path) -> bytes:
    """One process's publication (a ``sync``): returns the header of the views file it installed."""
    publication = Publication(exports_dir)
    cur = cat.cursor()
    try:
        assert publication.publish(cur, catalog_id=cat.catalog_id(), files={}, force=True)
    finally:
        cur.close()
        publication.close()
    return (exports_dir / "current" / "bus.duckdb").read_bytes()[:HEADER_BYTES]


def test_the_next_process_writes_its_views_file_once_with_the_same_header(
    bus: Config, catalog: Catalog, writes: list[Path]
) -> None:
    first = publish_once(catalog, bus.exports_dir)
    assert len(writes) >= 2  # the padding searched for: unpadded, then padded
    pads = bus.exports_dir / STORE_DIR / PADS_NAME
    assert json.loads(pads.read_text())["pads"]
    for _ in range(3):
        writes.clear()
        assert publish_once(catalog, bus.exports_dir) == first
        assert len(writes) == 1


@pytest.mark.parametrize("record", ["not json", '{"layout": 8, "pads": {}}', "stale"])
def test_a_stale_or_unreadable_record_costs_writes_not_the_header(
    bus: Config, catalog: Catalog, writes: list[Path], record: str
) -> None:
    first = publish_once(catalog, bus.exports_dir)
    pads = bus.exports_dir / STORE_DIR / PADS_NAME
    if record == "stale":  # the right views, the wrong padding
        doc = json.loads(pads.read_text())
        doc["pads"] = {k: v + 5000 for k, v in doc["pads"].items()}
        record = json.dumps(doc)
    pads.write_text(record)
    writes.clear()
    assert publish_once(catalog, bus.exports_dir) == first
    assert len(writes) >= 2
    writes.clear()
    assert publish_once(catalog, bus.exports_dir) == first  # found again, and kept
    assert len(writes) == 1
