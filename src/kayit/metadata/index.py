"""The committed index: message id -> (version, checksum, holders), as the log placed them.

Memory decides the layout: a cluster keeps one entry per message, millions of them. Each entry is
one int, ``term | seq | checksum | holder set`` packed in bit fields (40 bytes while the term is
below 2**16), where an object per entry with its own numbers costs about 120. Holder sets repeat
(there are few distinct ones), so entries name them by their position in a shared table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from kayit.metadata.packing import CHECKSUM_BITS, CHECKSUM_MASK, SEQ_BITS, SEQ_MASK, pack, unpack
from kayit.version import Version

_SET_BITS = 32
_SET_MASK = (1 << _SET_BITS) - 1
# Fields from the low bits up: holder set, then the copy's identity as kayit.metadata.packing
# packs it (checksum, seq, term). The version alone is ``packed >> _VERSION_SHIFT``, an int
# that orders as Version tuples do.
_CHECKSUM_SHIFT = _SET_BITS
_VERSION_SHIFT = _SET_BITS + CHECKSUM_BITS
_TERM_SHIFT = _VERSION_SHIFT + SEQ_BITS


class IndexEntry(NamedTuple):
    version: Version
    checksum: int  # crc32 of the message
    holders: tuple[str, ...]  # node ids, sorted; every node that holds a copy of this version


class Columns(NamedTuple):
    """Entries side by side, one list per field: how snapshots carry them. ``refs`` are
    positions in a holder-set table that travels beside them."""

    ids: Sequence[str]
    terms: Sequence[int]
    seqs: Sequence[int]
    checksums: Sequence[int]
    refs: Sequence[int]


def _pack(term: int, seq: int, checksum: int, holder_set: int) -> int:
    return pack(term, seq, checksum) << _SET_BITS | holder_set


class CommittedIndex:
    """Only what committed log entries say: reservations and SETs under way live with the
    leader that makes them, not here."""

    def __init__(self, holder_sets: Iterable[tuple[str, ...]] = ()) -> None:
        self._packed: dict[str, int] = {}
        # Holder sets by position, each a sorted tuple of node ids. Positions are never reused
        # (entries point at them); a set no entry uses any more stays, and there are few.
        self._sets: list[tuple[str, ...]] = list(holder_sets)
        self._set_ids: dict[tuple[str, ...], int] = {}
        self._uses: list[int] = [0] * len(self._sets)  # entries per holder set: the load
        self._rebuild_set_ids()

    def __len__(self) -> int:
        return len(self._packed)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._packed

    def __eq__(self, other: object) -> bool:
        """Equal when they hold the same entries, however their holder sets are numbered."""
        if not isinstance(other, CommittedIndex):
            return NotImplemented
        if len(self) != len(other):
            return False
        if self._sets == other._sets:
            return self._packed == other._packed
        return all(other.get(message_id) == self.get(message_id) for message_id in self._packed)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def get(self, message_id: str) -> IndexEntry | None:
        packed = self._packed.get(message_id)
        if packed is None:
            return None
        version, checksum = unpack(packed >> _SET_BITS)
        return IndexEntry(version, checksum, self._sets[packed & _SET_MASK])

    def place(
        self, message_id: str, version: Version, checksum: int, holders: tuple[str, ...]
    ) -> bool:
        """Record ``holders`` (sorted, distinct) as holding ``version``, if it is newer than
        the indexed one, or the same write (same version and checksum) on other holders: a
        repair or a move. False, and nothing changed, otherwise."""
        term, seq = version
        wanted = term << SEQ_BITS | seq
        current = self._packed.get(message_id)
        if current is not None:
            known = current >> _VERSION_SHIFT
            if wanted < known:
                return False
            if wanted == known and (
                checksum != current >> _CHECKSUM_SHIFT & CHECKSUM_MASK
                or holders == self._sets[current & _SET_MASK]
            ):
                return False
            self._uses[current & _SET_MASK] -= 1
        holder_set = self._set_ids.get(holders)
        if holder_set is None:
            holder_set = self._add_set(holders)
        self._uses[holder_set] += 1
        self._packed[message_id] = (wanted << CHECKSUM_BITS | checksum) << _SET_BITS | holder_set
        return True

    def ids(self) -> list[str]:
        return list(self._packed)

    def remove(self, message_id: str) -> None:
        """The id leaves the index (a DEL); nothing happens for an id it does not have."""
        packed = self._packed.pop(message_id, None)
        if packed is not None:
            self._uses[packed & _SET_MASK] -= 1

    def drop_holder(self, node_id: str) -> None:
        """``node_id`` holds nothing any more. Rewrites the few holder sets, not the entries:
        two positions may then name equal sets, which only costs a table slot."""
        self._sets = [tuple(h for h in held if h != node_id) for held in self._sets]
        self._rebuild_set_ids()

    def held_by(self, node_id: str) -> list[str]:
        """The ids with a copy on ``node_id`` (a scan of the whole index)."""
        wanted = {position for position, held in enumerate(self._sets) if node_id in held}
        if not wanted:
            return []
        return [key for key, packed in self._packed.items() if packed & _SET_MASK in wanted]

    def held_by_fewer(self, count: int) -> list[str]:
        """The ids with fewer than ``count`` holders (a scan of the whole index, skipped
        when no holder set is that small)."""
        wanted = {position for position, held in enumerate(self._sets) if len(held) < count}
        if not wanted:
            return []
        return [key for key, packed in self._packed.items() if packed & _SET_MASK in wanted]

    def load(self) -> Counter[str]:
        """Copies per node."""
        load: Counter[str] = Counter()
        for held, uses in zip(self._sets, self._uses, strict=True):
            if uses:
                for node_id in held:
                    load[node_id] += uses
        return load

    def nodes_named(self) -> set[str]:
        """Every node some holder set names."""
        return {node_id for held in self._sets for node_id in held}

    def holder_sets(self) -> list[tuple[str, ...]]:
        """A copy of the holder-set table that ``columns`` refer to."""
        return list(self._sets)

    def columns(self, batch: int) -> Iterator[Columns]:
        """All entries, ``batch`` at a time, as they are at this call: entries placed while
        the batches are taken do not show, so a snapshot is of one moment. Pair it with the
        ``holder_sets`` taken at the same moment."""
        return _batches(list(self._packed), list(self._packed.values()), batch)

    def extend(self, columns: Columns) -> None:
        """Add entries of ids not yet indexed (a snapshot being restored). Raises ValueError
        for an id already indexed or a holder set the table does not have."""
        if columns.refs and max(columns.refs) >= len(self._sets):
            raise ValueError("an entry names a holder set the snapshot does not have")
        added = {
            key: _pack(term, seq, checksum, ref)
            for key, term, seq, checksum, ref in zip(*columns, strict=True)
        }
        before = len(self._packed)
        self._packed.update(added)
        if len(self._packed) != before + len(columns.ids):
            raise ValueError("an id appears twice in the snapshot")
        for ref, uses in Counter(columns.refs).items():
            self._uses[ref] += uses

    def _add_set(self, holders: tuple[str, ...]) -> int:
        position = len(self._sets)
        if position > _SET_MASK:
            raise OverflowError("too many distinct holder sets")
        self._sets.append(holders)
        self._uses.append(0)
        self._set_ids[holders] = position
        return position

    def _rebuild_set_ids(self) -> None:
        self._set_ids = {}
        for position, held in enumerate(self._sets):
            self._set_ids.setdefault(held, position)


def _batches(keys: list[str], values: list[int], batch: int) -> Iterator[Columns]:
    for start in range(0, len(keys), batch):
        chunk = values[start : start + batch]
        yield Columns(
            keys[start : start + batch],
            [packed >> _TERM_SHIFT for packed in chunk],
            [packed >> _VERSION_SHIFT & SEQ_MASK for packed in chunk],
            [packed >> _CHECKSUM_SHIFT & CHECKSUM_MASK for packed in chunk],
            [packed & _SET_MASK for packed in chunk],
        )
