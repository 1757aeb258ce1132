"""Fixtures of the reliability suite: figures printed at the end.

(``daemon_factory``, the daemons that are always reaped, is in tests/conftest.py.) ``figures``
collects the numbers a test wants reported (printed in the terminal summary, ``-rA`` not needed).
"""

from __future__ import annotations

from typing import Any

import pytest

_FIGURES: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict the test fills with its figures; reported in the terminal summary."""
    data: dict[str, Any] = {}
    _FIGURES.append((request.node.nodeid, data))
    return data


def pytest_terminal_summary(terminalreporter: Any) -> None:
    reported = [(nodeid, data) for nodeid, data in _FIGURES if data]
    if not reported:
        return
    terminalreporter.section("reliability figures")
    for nodeid, data in reported:
        terminalreporter.write_line(nodeid)
        for key, value in data.items():
            terminalreporter.write_line(f"    {key}: {value}")
