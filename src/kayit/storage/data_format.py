"""The version of a node directory's layout (``node-*/format``), so that a kayit never reads a
layout it does not know as if it were its own.

Format 3 is the layout of a cluster whose metadata Raft replicates: ``raft/`` beside
``messages/``, ``copylog/`` and ``journal.log``, copies versioned by Raft term. A kayit of format
2 would not read ``copylog/``, and would drop the copies only it holds.

Format 2 kept pending copies as files in ``pending/``: it is marked 3 here, and the store takes
those files into its copy log when it opens.

Format 1 was the single-leader layout (the leader's index in its journal, a ``term`` file); an
unmarked directory is of format 1 too, or new. Its messages are in no replicated index, and
the cluster would take them for copies of writes that never committed and delete them, so a
format 1 directory that holds messages is refused with a message saying what to do; one that
holds none is simply marked 2.
"""

from __future__ import annotations

from pathlib import Path

from kayit.config import ConfigError
from kayit.storage.atomic import replace_durably

FORMAT_VERSION = 3
_PENDING_FILES_FORMAT = 2
_SINGLE_LEADER_FORMAT = 1
FORMAT_FILE = "format"


def ensure_format(node_dir: Path) -> None:
    """Mark ``node_dir`` with the current format, or raise ConfigError if it holds another."""
    path = node_dir / FORMAT_FILE
    try:
        found = path.read_bytes()
    except FileNotFoundError:
        found = b"%d\n" % _SINGLE_LEADER_FORMAT
    text = found.decode("ascii", errors="replace").strip()
    if text == str(_SINGLE_LEADER_FORMAT):
        _refuse_if_it_holds_messages(node_dir)
        node_dir.mkdir(parents=True, exist_ok=True)
        replace_durably(path, b"%d\n" % FORMAT_VERSION)
        return
    if text == str(_PENDING_FILES_FORMAT):
        replace_durably(path, b"%d\n" % FORMAT_VERSION)
        return
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


def _refuse_if_it_holds_messages(node_dir: Path) -> None:
    messages = node_dir / "messages"
    journal = node_dir / "journal.log"
    held = messages.is_dir() and any(messages.iterdir())
    if held or (journal.exists() and journal.stat().st_size > 0):
        raise ConfigError(
            f"{node_dir} holds messages written by the single-leader kayit (data format "
            f"{_SINGLE_LEADER_FORMAT}); this kayit replicates its metadata with Raft (format "
            f"{FORMAT_VERSION}) and cannot take them over yet: it would not serve them, and "
            "would delete them as copies of writes that never committed. Keep running the kayit "
            "that wrote them, or move the directory aside to start this node empty"
        )
