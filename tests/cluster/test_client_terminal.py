"""``kayit client`` at a terminal (a pseudo-terminal here): help, line editing, and a history
kept across sessions that leaves passwords out."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.harness import start_lone_node


class Terminal:
    """``kayit client`` with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, port: int, home: Path) -> None:
        self._master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kayit", "client", str(port)],
            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env={**os.environ, "HOME": str(home), "TERM": "xterm"},
        )  # fmt: skip
        os.close(slave)
        self.seen = ""

    def type(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def expect(self, text: str, timeout: float = 15) -> None:
        """Until ``text`` shows after what was expected before."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never showed; the terminal shows:\n{self.seen}"
            if select.select([self._master], [], [], left)[0]:
                try:
                    self.seen += os.read(self._master, 4096).decode(errors="replace")
                except OSError:  # the client exited: its side of the terminal closed
                    break
        assert text in self.seen, f"{text!r} never showed; the terminal shows:\n{self.seen}"
        self.seen = self.seen[self.seen.index(text) + len(text) :]

    def close(self) -> int:
        try:
            return self.process.wait(timeout=15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self._master)


@pytest.mark.cluster
def test_help_editing_and_a_history_without_passwords(tmp_path: Path) -> None:
    node, port = start_lone_node(tmp_path)
    try:
        first = Terminal(port, tmp_path)
        first.expect("kayit> ")
        first.type("help\n")
        first.expect("GET <id>")
        first.expect("kayit> ")
        first.type("SET k one\n")
        first.expect("OK")
        first.expect("kayit> ")
        first.type("AUTH hunter2\n")  # the node has no password: an error, and not kept
        first.expect("ERROR")
        first.expect("kayit> ")  # keys typed before the prompt would not reach readline
        first.type("\x1b[A\x7f\x7f\x7ftwo\n")  # up: the SET (not the AUTH); one -> two
        first.expect("OK")
        first.expect("kayit> ")
        first.type("GET k\n")
        first.expect("two")
        first.expect("kayit> ")
        first.type("\x04")  # Ctrl-D
        assert first.close() == 0
        history = (tmp_path / ".kayit_history").read_text()
        assert history.splitlines() == ["help", "SET k one", "SET k two", "GET k"]
        assert (tmp_path / ".kayit_history").stat().st_mode & 0o077 == 0

        second = Terminal(port, tmp_path)  # a new session recalls the last one's lines
        second.expect("kayit> ")
        second.type("\x1b[A\n")  # the last line of the last session: GET k
        second.expect("two")
        second.expect("kayit> ")
        second.type("quit\n")
        assert second.close() == 0
    finally:
        node.kill()
