"""The commands the metadata log carries, and their binary encoding.

The first byte of an encoded command names both the command and the layout of what follows. A
layout is never changed in place: a new one takes a new byte, so that a node reading an old log
entry always knows how it was written. ``decode`` raises ValueError for any bytes ``encode``
does not produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from kayit.metadata import wire
from kayit.metadata.index import Columns
from kayit.version import Version

_FORMED = 1
_NODE_ADDED = 2
_NODE_REMOVED = 3
_ADDRESS_CHANGED = 4
_PLACED = 5
_DELETED = 6
_RELEASED = 7


@dataclass(frozen=True, slots=True)
class Formed:
    """The first command of a new cluster. ``tolerance`` comes from the flags or
    tolerance.conf of the node that formed it; from then on this committed value is the one."""

    cluster_id: str
    tolerance: int

    def encode(self) -> bytes:
        return bytes((_FORMED,)) + wire.text(self.cluster_id) + wire.u16(self.tolerance)


@dataclass(frozen=True, slots=True)
class NodeAdded:
    node_id: str
    address: str  # host:port of its gRPC server

    def encode(self) -> bytes:
        return bytes((_NODE_ADDED,)) + wire.text(self.node_id) + wire.text(self.address)


@dataclass(frozen=True, slots=True)
class NodeRemoved:
    """The node is retired for good: its id can never join again, and it holds nothing."""

    node_id: str

    def encode(self) -> bytes:
        return bytes((_NODE_REMOVED,)) + wire.text(self.node_id)


@dataclass(frozen=True, slots=True)
class AddressChanged:
    node_id: str
    address: str

    def encode(self) -> bytes:
        return bytes((_ADDRESS_CHANGED,)) + wire.text(self.node_id) + wire.text(self.address)


class PlacedItem(NamedTuple):
    """One message's copies: a SET, or a repair or move of the same version. A tuple rather
    than a dataclass because a batch decodes thousands of them at a time."""

    message_id: str
    version: Version
    checksum: int  # crc32 of the message
    # Every node that holds a copy, the one that wrote it included: after a failover no node
    # is a holder by being the leader. Order and repeats carry no meaning.
    holders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Placed:
    """Index updates, many SETs in one log entry.

    Layout: the distinct node ids of the batch, the distinct holder lists as positions in
    those, then the items as columns (``wire.write_columns``) whose refs are positions in the
    holder lists. A batch names a few nodes thousands of times, so each item costs its id
    plus 22 bytes."""

    items: tuple[PlacedItem, ...]

    def encode(self) -> bytes:
        lists: dict[tuple[str, ...], int] = {}
        refs = [lists.setdefault(item.holders, len(lists)) for item in self.items]
        nodes: dict[str, int] = {}
        for holders in lists:
            for node_id in holders:
                nodes.setdefault(node_id, len(nodes))
        parts = [bytes((_PLACED,)), wire.u16(len(nodes))]
        parts += map(wire.text, nodes)
        parts.append(wire.u32(len(lists)))
        for holders in lists:
            parts.append(wire.u8(len(holders)))
            parts += (wire.u16(nodes[node_id]) for node_id in holders)
        versions = [item.version for item in self.items]
        columns = Columns(
            [item.message_id for item in self.items],
            [version.term for version in versions],
            [version.seq for version in versions],
            [item.checksum for item in self.items],
            refs,
        )
        parts.append(wire.write_columns(columns))
        return b"".join(parts)


class DeletedItem(NamedTuple):
    message_id: str
    version: Version  # the delete's own, newer than the version it removes


@dataclass(frozen=True, slots=True)
class Deleted:
    """DEL of ids. Each id indexed at an older version leaves the index for a tombstone of
    this version naming its holders; the tombstone stays until each has let its copy go
    (``Released``), so that no copy of the id outlives it and no older SET comes back."""

    items: tuple[DeletedItem, ...]

    def encode(self) -> bytes:
        parts = [bytes((_DELETED,)), wire.u32(len(self.items))]
        for message_id, (term, seq) in self.items:
            parts += (wire.text(message_id), wire.u64(term), wire.u64(seq))
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Released:
    """``node_id`` holds no copy any more of these deleted ids, at their tombstones'
    versions (``items``: id, the tombstone's version) or older."""

    node_id: str
    items: tuple[tuple[str, Version], ...]

    def encode(self) -> bytes:
        parts = [bytes((_RELEASED,)), wire.text(self.node_id), wire.u32(len(self.items))]
        for message_id, (term, seq) in self.items:
            parts += (wire.text(message_id), wire.u64(term), wire.u64(seq))
        return b"".join(parts)


Command = Formed | NodeAdded | NodeRemoved | AddressChanged | Placed | Deleted | Released


def decode(data: bytes) -> Command:
    cursor = wire.Cursor(data)
    command = _decode(cursor, cursor.u8())
    cursor.finish()
    return command


def _decode(cursor: wire.Cursor, tag: int) -> Command:
    if tag == _PLACED:
        return _decode_placed(cursor)
    if tag == _FORMED:
        return Formed(cursor.text(), cursor.u16())
    if tag == _NODE_ADDED:
        return NodeAdded(cursor.text(), cursor.text())
    if tag == _NODE_REMOVED:
        return NodeRemoved(cursor.text())
    if tag == _ADDRESS_CHANGED:
        return AddressChanged(cursor.text(), cursor.text())
    if tag == _DELETED:
        return Deleted(tuple(DeletedItem(*_versioned_id(cursor)) for _ in range(cursor.u32())))
    if tag == _RELEASED:
        node_id = cursor.text()
        return Released(node_id, tuple(_versioned_id(cursor) for _ in range(cursor.u32())))
    raise ValueError(f"no command is encoded with first byte {tag}")


def _versioned_id(cursor: wire.Cursor) -> tuple[str, Version]:
    return cursor.text(), Version(cursor.u64(), cursor.u64())


def _decode_placed(cursor: wire.Cursor) -> Placed:
    nodes = [cursor.text() for _ in range(cursor.u16())]
    lists: list[tuple[str, ...]] = []
    for _ in range(cursor.u32()):
        positions = [cursor.u16() for _ in range(cursor.u8())]
        if positions and max(positions) >= len(nodes):
            raise ValueError("a holder list names a node the batch does not")
        lists.append(tuple(nodes[position] for position in positions))
    columns = wire.read_columns(cursor)
    if columns.refs and max(columns.refs) >= len(lists):
        raise ValueError("an item names a holder list the batch does not")
    versions = map(Version._make, zip(columns.terms, columns.seqs, strict=True))
    holders = map(lists.__getitem__, columns.refs)
    items = zip(columns.ids, versions, columns.checksums, holders, strict=True)
    return Placed(tuple(map(PlacedItem._make, items)))
