"""``kayit client`` at a terminal: line editing and a history kept across sessions (readline),
and a few words it answers itself. In a pipe none of this applies: every line goes to the
node as it is."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

HISTORY_FILE = Path("~/.kayit_history")
HISTORY_LENGTH = 1000
QUIT = frozenset({"quit", "exit"})
HELP = """\
Each line is sent to the node, and its reply printed:
  SET <id> <message>   store <message> under <id>: OK once it is on TOLERANCE + 1 nodes
  GET <id>             the message stored under <id>, or NOT_FOUND
  EXISTS <id>          1 if <id> is set, else 0
  STRLEN <id>          the length of its message in bytes, 0 if not set
  DEL <id>             delete <id>: 1 if it was set, else 0
  AUTH <password>      for nodes started with --requirepass (never kept in the history)
Answered here: help (this text), quit or exit (as Ctrl-D). Up and down arrows recall earlier
lines, also those of earlier sessions (kept in ~/.kayit_history)."""


@contextlib.contextmanager
def line_editing(history: Path = HISTORY_FILE) -> Iterator[None]:
    """While inside, ``input()`` edits lines and recalls earlier ones; the history is read
    from ``history`` first and written back after, readable by its owner only."""
    try:
        import readline
    except ImportError:  # a Python built without it: plain input() then
        yield
        return
    path = history.expanduser()
    readline.set_history_length(HISTORY_LENGTH)
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.touch(mode=0o600)
            os.chmod(path, 0o600)
            readline.write_history_file(path)


def forget_if_secret(line: str) -> None:
    """Take an AUTH line back out of the history: its password must not be kept on disk."""
    words = line.split(maxsplit=1)
    if not words or words[0].upper() != "AUTH":
        return
    try:
        import readline
    except ImportError:
        return
    last = readline.get_current_history_length()
    if last > 0:
        readline.remove_history_item(last - 1)
