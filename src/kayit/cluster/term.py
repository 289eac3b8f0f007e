"""The leader's term: persisted and raised at every leader start, so versions never repeat."""

from __future__ import annotations

from pathlib import Path

from kayit.storage.atomic import replace_durably


def next_term(path: Path) -> int:
    """Read the last term from ``path``, store the next one durably, and return it."""
    try:
        last = int(path.read_text(encoding="ascii").strip() or 0)
    except FileNotFoundError:
        last = 0
    term = last + 1
    replace_durably(path, f"{term}\n".encode("ascii"))
    return term
