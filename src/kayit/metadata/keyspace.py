"""SCAN over the committed index: the order it walks the ids in, one page at a time.

The ids are walked in the order of a 63-bit hash of each, their *position*, and a cursor is
the position the next page starts at. So, as Redis promises, an id present during the whole
walk is returned whatever is set meanwhile: positions do not move when ids come or go. The
sorted ids are taken when a walk starts (cursor 0) and the index changed since they were
last taken; a page that continues a walk reads the list it finds, which was taken at or after
that walk started, so every id present all along is in it.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from kayit.metadata.machine import MetadataView

# Ids looked at per page at most, whatever COUNT asks: what one reply (or forwarded call)
# carries stays a few MB.
MAX_PAGE = 10_000


def position(message_id: str) -> int:
    """Where ``message_id`` is in the walk: 1..2**63 (0 is the cursor that starts a walk, and
    the one that says it is complete)."""
    digest = hashlib.blake2b(message_id.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) + 1


@dataclass(frozen=True, slots=True)
class KeyPage:
    ids: list[str]
    cursor: int  # where the next page starts; 0 once the walk is complete


class KeyOrder:
    def __init__(self) -> None:
        self._taken_at = -1  # the metadata's applied index when the list was taken
        self._positions: list[int] = []
        self._ids: list[str] = []

    def page(
        self,
        metadata: MetadataView,
        cursor: int,
        count: int,
        match: Callable[[str], bool] | None = None,
    ) -> KeyPage:
        """The ids of up to ``count`` positions from ``cursor`` on (more when ids share the
        last position), those ``match`` accepts. A page may hold none and still not end the
        walk, as in Redis."""
        if self._taken_at < 0 or (cursor == 0 and metadata.applied_index != self._taken_at):
            self._take(metadata)
        positions = self._positions
        start = bisect.bisect_left(positions, cursor)
        end = min(start + max(1, min(count, MAX_PAGE)), len(positions))
        while 0 < end < len(positions) and positions[end] == positions[end - 1]:
            end += 1  # a cursor names a position: ids that share one go out together
        ids = self._ids[start:end]
        if match is not None:
            ids = [message_id for message_id in ids if match(message_id)]
        return KeyPage(ids, positions[end] if end < len(positions) else 0)

    def _take(self, metadata: MetadataView) -> None:
        ordered = sorted((position(message_id), message_id) for message_id in metadata.ids())
        self._positions = [where for where, _ in ordered]
        self._ids = [message_id for _, message_id in ordered]
        self._taken_at = metadata.applied_index
