"""MetadataMachine: ClusterMetadata as the state machine a RaftDriver applies its log to.

Every committed entry is applied, not only commands: a new leader's no-op moves
``last_leader_term`` at once, which the deletion rule rests on (see ``ClusterMetadata.apply``),
and the applied index then follows the Raft log one for one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from functools import partial
from typing import Protocol

from kayit.consensus.messages import Entry
from kayit.metadata.commands import Placed, PlacedItem
from kayit.metadata.index import IndexEntry
from kayit.metadata.snapshot import restore, snapshot_chunks
from kayit.metadata.state import ClusterMetadata, Tombstone
from kayit.version import Version


class MetadataView(Protocol):
    """What the rest of a node reads of the metadata; only the log changes it."""

    @property
    def cluster_id(self) -> str: ...
    @property
    def formed(self) -> bool: ...
    @property
    def tolerance(self) -> int: ...
    @property
    def applied_index(self) -> int: ...
    @property
    def last_leader_term(self) -> int: ...
    @property
    def message_count(self) -> int: ...
    @property
    def nodes(self) -> Mapping[str, str]: ...
    @property
    def removed(self) -> frozenset[str]: ...
    def entry(self, message_id: str) -> IndexEntry | None: ...
    def ids(self) -> list[str]: ...
    @property
    def tombstone_count(self) -> int: ...
    def tombstone(self, message_id: str) -> Tombstone | None: ...
    def tombstones_on(self, node_id: str) -> list[tuple[str, Version]]: ...
    def holders_on(self, node_id: str) -> list[str]: ...
    def under_placed(self) -> list[str]: ...
    def load(self) -> dict[str, int]: ...
    def voters_wanted(self, alive: Collection[str], voters: Collection[str]) -> frozenset[str]: ...
    def copies_to_delete(
        self,
        node_id: str,
        inventory: Iterable[tuple[str, Version]],
    ) -> list[tuple[str, Version]]: ...


# The items of a Placed entry that took effect, as they were applied.
PlacedListener = Callable[[list[PlacedItem]], None]


class MetadataMachine:
    """The driver's StateMachine. ``on_apply`` is called after each entry applied and each
    snapshot restored, on the driver's loop: to wake whoever waits for the metadata.
    ``on_placed`` gets the items of each Placed entry that took effect (holders promote their
    pending copies then); a restored snapshot tells it nothing."""

    applies_every_entry = True

    def __init__(
        self,
        metadata: ClusterMetadata | None = None,
        on_apply: Callable[[], None] | None = None,
        on_placed: PlacedListener | None = None,
    ) -> None:
        self._metadata = metadata or ClusterMetadata()
        self._on_apply = on_apply
        self._on_placed = on_placed

    @property
    def metadata(self) -> ClusterMetadata:
        """The state now; a restore replaces the object, so read it again after any await."""
        return self._metadata

    def apply(self, entry: Entry) -> tuple[bool, ...]:
        """Which parts of the entry's command took effect (``ClusterMetadata.apply``)."""
        try:
            command, applied = self._metadata.apply_entry(entry)
            if self._on_placed is not None and isinstance(command, Placed):
                taken = [item for item, ok in zip(command.items, applied, strict=True) if ok]
                if taken:
                    self._on_placed(taken)
            return applied
        finally:
            if self._on_apply is not None:
                self._on_apply()

    def snapshot(self) -> Callable[[], bytes]:
        return partial(b"".join, snapshot_chunks(self._metadata))

    def restore(self, data: bytes) -> None:
        self._metadata = restore(data)
        if self._on_apply is not None:
            self._on_apply()
