"""The publication's readers for the tests: a process holding named connections to
``exports/bus.duckdb`` open on command (:class:`Holder`, run from ``tests/_publication_reader.py``)
and the generation directories still present (what garbage collection has left)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from builders import DEADLINE_S
from reliability.helpers import CLEAN_ENV

from quantbot_bus.config import Config
from quantbot_bus.publication import current_generation

READER = Path(__file__).with_name("_publication_reader.py")


def generations(config: Config) -> set[str]:
    """The published generation directories present under exports/gen (the current one and
    older: a directory above it is being made, nobody reads it yet)."""
    current = int(current_generation(config.exports_dir).name)
    return {
        p.name
        for p in (config.exports_dir / "gen").iterdir()
        if p.name.isdigit() and int(p.name) <= current
    }


class Holder:
    """A reader process that keeps named connections to exports/bus.duckdb open on command."""

    def __init__(self, exports_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(READER), "holder", str(exports_dir)],
            env=CLEAN_ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the holder process died (exit {self.proc.poll()}) on {command!r}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def must(self, command: str) -> dict[str, Any]:
        answer = self.ask(command)
        assert answer["ok"], f"{command!r}: {answer['error']}"
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with_stdin = self.proc.stdin
            try:
                with_stdin.write("quit\n")
                with_stdin.flush()
            except OSError:
                pass
            try:
                self.proc.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(DEADLINE_S)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
