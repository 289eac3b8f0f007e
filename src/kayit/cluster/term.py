"""The leader's term: persisted and raised at every leader start, so versions never repeat."""

from __future__ import annotations

import os
from pathlib import Path


def next_term(path: Path) -> int:
    """Read the last term from ``path``, store the next one durably, and return it."""
    try:
        last = int(path.read_text(encoding="ascii").strip() or 0)
    except FileNotFoundError:
        last = 0
    term = last + 1
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "w", encoding="ascii") as file:
        file.write(f"{term}\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return term
