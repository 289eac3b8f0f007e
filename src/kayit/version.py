"""Versions order the writes to one id, across leaders and restarts."""

from __future__ import annotations

from typing import NamedTuple


class Version(NamedTuple):
    """(term, seq): term grows each time a leader starts, seq with each SET in a term.

    Tuples compare element-wise, so a greater version is always the newer write.
    """

    term: int
    seq: int


UNKNOWN = Version(0, 0)  # a copy found on disk whose version was not recorded
