"""Snapshots of ClusterMetadata, made and taken back in chunks.

A snapshot is a run of records ``<u32 body length><u32 crc32 of body><body>`` (big-endian, as
the journal frames its records), the first byte of each body naming its kind, in this order:

- ``H`` header: magic, format, cluster id, tolerance, the Raft index and term applied, and how
  many members, removed nodes, holder sets, entries and (format 2) tombstones follow;
- ``N`` nodes: the members (id, address) in joining order, then the removed ids;
- ``S`` holder sets: each a u8 count of u16 positions in the members;
- ``E`` entries, repeated: index entries as columns (``wire.write_columns``) whose refs are
  positions in the holder sets, up to the header's count;
- ``T`` tombstones (format 2, one record): each a deleted id, its delete's version (u64 term,
  u64 seq) and a u8 count of u16 positions in the members, the holders yet to let go.

Format 1 (before DEL) has no tombstones; it is read still.

The bytes may be cut anywhere for transport: ``SnapshotReader`` takes them in any pieces.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from zlib import crc32

from kayit.metadata import wire
from kayit.metadata.index import CommittedIndex
from kayit.metadata.state import ClusterMetadata, Tombstone
from kayit.version import Version

CHUNK_SIZE = 1 << 20
_ENTRIES_PER_RECORD = 16_384  # about 0.7 MiB with 20-character ids
_MAX_RECORD = 64 << 20
_FRAME = struct.Struct(">II")
_MAGIC = b"kayit-metadata"
_FORMAT = 2
_FORMATS = (1, 2)  # the formats this node reads
_HEADER, _NODES, _SETS, _ENTRIES, _TOMBSTONES = b"H", b"N", b"S", b"E", b"T"


def snapshot(metadata: ClusterMetadata) -> bytes:
    return b"".join(snapshot_chunks(metadata))


def restore(data: bytes) -> ClusterMetadata:
    """The state ``data`` is a snapshot of. Raises ValueError for anything else."""
    reader = SnapshotReader()
    reader.feed(data)
    return reader.finish()


def snapshot_chunks(metadata: ClusterMetadata, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The snapshot in pieces of ``chunk_size`` bytes (the last one shorter), of the state as
    it is at this call: entries applied while the pieces are taken do not show in them."""
    if chunk_size < 1:
        raise ValueError("chunks must have at least one byte")
    nodes = dict(metadata.nodes)
    removed = sorted(metadata.removed)
    holder_sets = metadata.index.holder_sets()
    batches = metadata.index.columns(_ENTRIES_PER_RECORD)
    tombstones = dict(metadata.tombstones)
    position = {node_id: place for place, node_id in enumerate(nodes)}
    header = _Header(
        metadata.cluster_id,
        metadata.tolerance,
        metadata.applied_index,
        metadata.last_leader_term,
        len(nodes),
        len(removed),
        len(holder_sets),
        len(metadata.index),
        len(tombstones),
    )
    head = [
        _record(header.encode()),
        _record(
            b"".join(
                chain(
                    [_NODES],
                    (wire.text(node_id) + wire.text(address) for node_id, address in nodes.items()),
                    map(wire.text, removed),
                )
            )
        ),
        _record(
            b"".join(
                chain(
                    [_SETS],
                    (
                        wire.u8(len(held)) + b"".join(wire.u16(position[h]) for h in held)
                        for held in holder_sets
                    ),
                )
            )
        ),
    ]
    entries = (_record(_ENTRIES + wire.write_columns(batch)) for batch in batches)
    tail = [_record(_TOMBSTONES + b"".join(_tombstone(*t, position) for t in tombstones.items()))]
    return _pieces(chain(head, entries, tail), chunk_size)


def _tombstone(message_id: str, tomb: Tombstone, position: dict[str, int]) -> bytes:
    held = b"".join(wire.u16(position[h]) for h in tomb.holders)
    version = wire.u64(tomb.version.term) + wire.u64(tomb.version.seq)
    return wire.text(message_id) + version + wire.u8(len(tomb.holders)) + held


class SnapshotReader:
    """Takes a snapshot back from pieces cut anywhere. After a ValueError it is spent."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header: _Header | None = None
        self._nodes: dict[str, str] | None = None
        self._removed: list[str] = []
        self._index: CommittedIndex | None = None
        self._entries = 0
        self._tombstones: dict[str, Tombstone] | None = None

    def feed(self, piece: bytes) -> None:
        self._buffer += piece
        while len(self._buffer) >= _FRAME.size:
            length, expected = _FRAME.unpack_from(self._buffer)
            if not 0 < length <= _MAX_RECORD:
                raise ValueError(f"a snapshot record of {length} bytes")
            end = _FRAME.size + length
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[_FRAME.size : end])
            del self._buffer[:end]
            if crc32(body) != expected:
                raise ValueError("a snapshot record fails its checksum")
            self._read(wire.Cursor(body))

    def finish(self) -> ClusterMetadata:
        """The state, once every piece was fed; ValueError if the snapshot is incomplete."""
        header, index = self._header, self._index
        if self._buffer or header is None or index is None or self._entries != header.entries:
            raise ValueError("the snapshot ends early")
        if header.format >= 2 and self._tombstones is None:
            raise ValueError("the snapshot ends early")
        return ClusterMetadata(
            cluster_id=header.cluster_id,
            tolerance=header.tolerance,
            nodes=self._nodes,
            removed=self._removed,
            index=index,
            applied_index=header.applied_index,
            applied_term=header.applied_term,
            tombstones=self._tombstones,
        )

    def _read(self, cursor: wire.Cursor) -> None:
        kind = cursor.take(1)
        if self._header is None:
            self._expect(kind, _HEADER)
            self._header = _Header.read(cursor)
        elif self._nodes is None:
            self._expect(kind, _NODES)
            self._read_nodes(cursor, self._header)
        elif self._index is None:
            self._expect(kind, _SETS)
            self._index = CommittedIndex(self._read_sets(cursor, self._header, self._nodes))
        elif self._tombstones is not None:
            raise ValueError("a snapshot record after its tombstones")
        elif kind == _TOMBSTONES and self._header.format >= 2:
            if self._entries != self._header.entries:
                raise ValueError("tombstones before the last of the entries")
            self._tombstones = self._read_tombstones(cursor, self._header, self._nodes)
        else:
            self._expect(kind, _ENTRIES)
            columns = wire.read_columns(cursor)
            self._entries += len(columns.ids)
            if self._entries > self._header.entries:
                raise ValueError("more entries than the snapshot's header says")
            self._index.extend(columns)
        cursor.finish()

    @staticmethod
    def _expect(kind: bytes, wanted: bytes) -> None:
        if kind != wanted:
            raise ValueError(f"snapshot record {kind!r} where {wanted!r} belongs")

    def _read_nodes(self, cursor: wire.Cursor, header: _Header) -> None:
        self._nodes = {cursor.text(): cursor.text() for _ in range(header.nodes)}
        self._removed = [cursor.text() for _ in range(header.removed)]
        if len(self._nodes) != header.nodes or len(set(self._removed)) != header.removed:
            raise ValueError("a node appears twice in the snapshot")

    @staticmethod
    def _read_tombstones(
        cursor: wire.Cursor, header: _Header, nodes: Iterable[str]
    ) -> dict[str, Tombstone]:
        members = list(nodes)
        tombstones = {}
        for _ in range(header.tombstones):
            message_id, version = cursor.text(), Version(cursor.u64(), cursor.u64())
            positions = [cursor.u16() for _ in range(cursor.u8())]
            if any(p >= len(members) for p in positions):
                raise ValueError("a tombstone names a node that is not a member")
            tombstones[message_id] = Tombstone(version, tuple(members[p] for p in positions))
        if len(tombstones) != header.tombstones:
            raise ValueError("a deleted id appears twice in the snapshot")
        return tombstones

    @staticmethod
    def _read_sets(
        cursor: wire.Cursor, header: _Header, nodes: Iterable[str]
    ) -> list[tuple[str, ...]]:
        members = list(nodes)
        holder_sets = []
        for _ in range(header.holder_sets):
            positions = [cursor.u16() for _ in range(cursor.u8())]
            if len(set(positions)) != len(positions) or any(p >= len(members) for p in positions):
                raise ValueError("a holder set names a node twice, or one that is not a member")
            holder_sets.append(tuple(sorted(members[p] for p in positions)))
        return holder_sets


@dataclass(frozen=True, slots=True)
class _Header:
    cluster_id: str
    tolerance: int
    applied_index: int
    applied_term: int
    nodes: int
    removed: int
    holder_sets: int
    entries: int
    tombstones: int
    format: int = _FORMAT

    def encode(self) -> bytes:
        return b"".join(
            (
                _HEADER,
                _MAGIC,
                wire.u8(_FORMAT),
                wire.text(self.cluster_id),
                wire.u16(self.tolerance),
                wire.u64(self.applied_index),
                wire.u64(self.applied_term),
                wire.u32(self.nodes),
                wire.u32(self.removed),
                wire.u32(self.holder_sets),
                wire.u64(self.entries),
                wire.u32(self.tombstones),
            )
        )

    @classmethod
    def read(cls, cursor: wire.Cursor) -> _Header:
        if cursor.take(len(_MAGIC)) != _MAGIC:
            raise ValueError("not a kayit metadata snapshot")
        version = cursor.u8()
        if version not in _FORMATS:
            raise ValueError(f"snapshot format {version}; this node reads formats {_FORMATS}")
        return cls(
            cursor.text(),
            cursor.u16(),
            cursor.u64(),
            cursor.u64(),
            cursor.u32(),
            cursor.u32(),
            cursor.u32(),
            cursor.u64(),
            cursor.u32() if version >= 2 else 0,
            version,
        )


def _record(body: bytes) -> bytes:
    if len(body) > _MAX_RECORD:
        raise ValueError(f"a snapshot record of {len(body)} bytes is over {_MAX_RECORD}")
    return _FRAME.pack(len(body), crc32(body)) + body


def _pieces(records: Iterable[bytes], size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for record in records:
        buffer += record
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
