"""The version of a node directory's layout (``node-*/format``), so that a kayit never reads a
layout it does not know as if it were its own.

Format 1 is the layout every release so far has written: ``messages/``, ``journal.log`` and
``term``. A directory without a format file is of that layout (or new), so it is marked 1; a
later layout will migrate format 1 here at start, or refuse it with a message saying how.

Pending copies (``pending/<id>.<term>.<seq>.msg``, and journal records flagged pending) are
still format 1: they only add to it. A directory without ``pending/`` is a valid one with no
pending copies, and ``messages/`` keeps one file per committed copy as before. A kayit from
before them ignores ``pending/`` and takes pending records for damage (``storage.journal``):
it keeps every committed copy, and loses only the pending ones.
"""

from __future__ import annotations

from pathlib import Path

from kayit.config import ConfigError
from kayit.storage.atomic import replace_durably

FORMAT_VERSION = 1
FORMAT_FILE = "format"


def ensure_format(node_dir: Path) -> None:
    """Mark ``node_dir`` with the current format, or raise ConfigError if it holds another."""
    path = node_dir / FORMAT_FILE
    try:
        found = path.read_bytes()
    except FileNotFoundError:
        node_dir.mkdir(parents=True, exist_ok=True)
        replace_durably(path, b"%d\n" % FORMAT_VERSION)
        return
    text = found.decode("ascii", errors="replace").strip()
    if not text.isdecimal():
        raise ConfigError(
            f"{path} is damaged: it holds {text[:20]!r}, not a data format number. If this "
            f"directory was written by this kayit, write {FORMAT_VERSION} into it"
        )
    if int(text) != FORMAT_VERSION:
        raise ConfigError(
            f"{node_dir} is in data format {int(text)}, and this kayit reads format "
            f"{FORMAT_VERSION}: run the kayit that wrote it (a newer one), or move the "
            "directory aside so that the node starts empty and is repaired from the others"
        )
