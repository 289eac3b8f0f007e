"""CopyTable: a node's committed copies, id -> (version, checksum), one int per id.

A node holds a copy of millions of ids; a tuple of a Version and a checksum per id costs
about 140 bytes more than one int does (284 against 144 bytes an id, its key and dict slot
included), so each is packed as kayit.metadata.packing packs a copy, as the index does.
"""

from __future__ import annotations

from collections.abc import Mapping

from kayit.metadata.packing import pack, unpack
from kayit.storage.write_plan import Copy


def _pack(copy: Copy) -> int:
    (term, seq), checksum = copy
    return pack(term, seq, checksum)


class CopyTable:
    """The writer thread changes it, the loop and the readers look: each method is one
    operation on a dict, atomic under the GIL, as a plain dict of the copies was."""

    def __init__(self, copies: Mapping[str, Copy] | None = None) -> None:
        self._packed = {key: _pack(copy) for key, copy in (copies or {}).items()}

    def __len__(self) -> int:
        return len(self._packed)

    def get(self, message_id: str) -> Copy | None:
        packed = self._packed.get(message_id)
        return None if packed is None else unpack(packed)

    def update(self, copies: Mapping[str, Copy]) -> None:
        self._packed.update({key: _pack(copy) for key, copy in copies.items()})

    def discard(self, message_id: str) -> None:
        self._packed.pop(message_id, None)

    def items(self) -> list[tuple[str, Copy]]:
        """Every copy, as of one moment."""
        return [(key, unpack(packed)) for key, packed in list(self._packed.items())]
