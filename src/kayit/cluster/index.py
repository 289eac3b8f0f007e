"""The leader's index: message id -> (version, holders), and the load on each member."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from kayit.version import Version

_SEQ_BITS = 40


class Entry:
    """What the index knows of one message. Kept small (about 120 bytes with its numbers): a
    leader holds one per message, a million of them in well under 300 MB."""

    __slots__ = ("_version", "checksum", "holders")

    def __init__(self, version: Version, holders: tuple[str, ...], checksum: int = 0) -> None:
        self._version = version.term << _SEQ_BITS | version.seq  # one int, not a tuple of two
        self.holders = holders
        self.checksum = checksum  # crc32 of the message: the leader checks its own copy

    @property
    def version(self) -> Version:
        return Version(self._version >> _SEQ_BITS, self._version & ((1 << _SEQ_BITS) - 1))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self._version, self.holders, self.checksum) == (
            other._version,
            other.holders,
            other.checksum,
        )

    __hash__ = None  # type: ignore[assignment]  # compared by value, never hashed

    def __repr__(self) -> str:
        return f"Entry({self.version!r}, {self.holders!r}, {self.checksum})"


class Index:
    """Load counts committed copies plus copies reserved by SETs still in flight, so that
    concurrent SETs spread over members instead of all choosing the same least-loaded ones."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._load: Counter[str] = Counter()
        # Few distinct holder sets exist; sharing them saves a tuple per message.
        self._holder_sets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def held_by(self, addresses: set[str]) -> dict[str, Entry]:
        """The entries with a copy on any of ``addresses`` (a scan of the whole index)."""
        return {
            key: entry
            for key, entry in self._entries.items()
            if not addresses.isdisjoint(entry.holders)
        }

    def get(self, message_id: str) -> Entry | None:
        return self._entries.get(message_id)

    @property
    def load(self) -> Mapping[str, int]:
        return self._load

    def reserve(self, holders: Iterable[str]) -> None:
        self._load.update(holders)

    def release(self, holders: Iterable[str]) -> None:
        self._load.subtract(holders)

    def commit(
        self, message_id: str, version: Version, holders: Iterable[str], checksum: int = 0
    ) -> bool:
        """Record reserved ``holders`` as holding ``version``; False (and the reservation
        released) when the index already has a newer version."""
        holders = tuple(holders)
        holders = self._holder_sets.setdefault(holders, holders)
        current = self._entries.get(message_id)
        if current is not None and current.version > version:
            self.release(holders)
            return False
        if current is not None:
            self.release(current.holders)
        self._entries[message_id] = Entry(version, holders, checksum)
        return True
