"""The leader's term: persisted and raised at every leader start, so versions never repeat."""

from __future__ import annotations

from pathlib import Path

from kayit.config import ConfigError
from kayit.storage.atomic import replace_durably


def next_term(path: Path) -> int:
    """Read the last term from ``path``, store the next one durably, and return it. A missing
    file is a new node (term 1); a damaged one is a ConfigError, since starting over from
    term 1 would reuse versions and let an older value win over a newer one."""
    term = _last_term(path) + 1
    path.parent.mkdir(parents=True, exist_ok=True)  # a new node: its data dir may not exist yet
    replace_durably(path, f"{term}\n".encode("ascii"))
    return term


def _last_term(path: Path) -> int:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    text = data.decode("ascii", errors="replace").strip()
    if text.isdecimal() and int(text) > 0:
        return int(text)
    shown = repr(text[:20]) if text else "nothing"
    raise ConfigError(
        f"the term file {path} is damaged: it holds {shown}, not the leader's last term. "
        "Restore it from a backup, or write into it a number larger than the last term this "
        "node used (its log says 'term N' at every start; any larger number is safe). "
        "Starting over from term 1 could let old values win over newer ones."
    )
