"""Fixtures of the reliability suite: daemons that are always reaped, figures printed at the end.

``daemon_factory(config, **kw)`` returns an unstarted :class:`~reliability.helpers.DaemonProcess`
(``.start()``, ``.kill()``, ``.restart()``, ``.wait_live_runs(n)``...); every daemon a test made
is SIGKILLed and reaped when the test ends, whatever happened. ``figures`` collects the numbers
a test wants reported (printed in the terminal summary, ``-rA`` not needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quantbot_bus.config import Config

from .helpers import DaemonProcess

_FIGURES: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def factory(config: Config, **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(config, **kwargs)
        made.append(d)
        return d

    yield factory
    for d in made:
        d.ensure_dead()


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
