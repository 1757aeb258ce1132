"""The package metadata in pyproject.toml: the license as an SPDX string (setuptools >= 77
deprecates the TOML-table form and license classifiers, and warns on every build)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def check_license_metadata(doc: dict[str, Any]) -> None:
    project = doc["project"]
    assert project["license"] == "MIT"  # an SPDX expression, not {text = ...}
    assert not [c for c in project.get("classifiers", ()) if c.startswith("License ::")]
    (req,) = [r for r in doc["build-system"]["requires"] if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", req)
    assert match and int(match.group(1)) >= 77, req  # SPDX license strings need 77


def test_license_is_an_spdx_string() -> None:
    check_license_metadata(tomllib.loads(PYPROJECT.read_text(encoding="utf-8")))
