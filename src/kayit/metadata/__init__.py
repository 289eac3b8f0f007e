"""The cluster's metadata as a pure state machine applied from the replicated log.

Commands (``kayit.metadata.commands``) are what the leader proposes; ``ClusterMetadata``
(``kayit.metadata.state``) is what every replica gets by applying the committed ones in order,
and what the data path asks (who holds what, which copies may be deleted, who should vote).
Snapshots (``kayit.metadata.snapshot``) carry the whole state in chunks. No I/O anywhere here:
drivers persist, send and apply.
"""

from kayit.metadata.commands import (
    AddressChanged,
    Command,
    Deleted,
    DeletedItem,
    Formed,
    NodeAdded,
    NodeRemoved,
    Placed,
    PlacedItem,
    Released,
    decode,
)
from kayit.metadata.index import CommittedIndex, IndexEntry
from kayit.metadata.snapshot import SnapshotReader, restore, snapshot, snapshot_chunks
from kayit.metadata.state import ClusterMetadata, Tombstone

__all__ = [
    "AddressChanged",
    "ClusterMetadata",
    "Command",
    "CommittedIndex",
    "Deleted",
    "DeletedItem",
    "Formed",
    "IndexEntry",
    "NodeAdded",
    "NodeRemoved",
    "Placed",
    "PlacedItem",
    "Released",
    "SnapshotReader",
    "Tombstone",
    "decode",
    "restore",
    "snapshot",
    "snapshot_chunks",
]
