"""Snapshots of the metadata: whole states round-trip through chunks, damage is a ValueError."""

from __future__ import annotations

import random
from zlib import crc32

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kayit.metadata import (
    ClusterMetadata,
    Command,
    Formed,
    NodeAdded,
    NodeRemoved,
    Placed,
    PlacedItem,
    SnapshotReader,
    restore,
    snapshot,
    snapshot_chunks,
)
from kayit.version import Version


def grown(entries: int, seed: int = 1) -> ClusterMetadata:
    """A cluster of 6 nodes, one since removed, and ``entries`` ids in batches of 1000."""
    rng = random.Random(seed)
    metadata = ClusterMetadata()
    log: list[Command] = [
        Formed("cluster-ü", 2),
        *(NodeAdded(f"n{i}", f"10.0.0.{i}:5555") for i in range(6)),
    ]
    nodes = [f"n{i}" for i in range(6)]
    for first in range(0, entries, 1000):
        log.append(
            Placed(
                tuple(
                    PlacedItem(
                        f"message-{key}-é" if key % 7 == 0 else f"message-{key}",
                        Version(rng.randint(1, 3), key + 1),
                        rng.getrandbits(32),
                        tuple(rng.sample(nodes, 3)),
                    )
                    for key in range(first, min(first + 1000, entries))
                )
            )
        )
    log.append(NodeRemoved("n5"))
    for position, command in enumerate(log, start=1):
        metadata.apply(command, 3, position)
    return metadata


def test_an_empty_state_round_trips() -> None:
    assert restore(snapshot(ClusterMetadata())) == ClusterMetadata()


def test_a_state_of_fifty_thousand_entries_round_trips_through_chunks() -> None:
    metadata = grown(50_000)
    chunks = list(snapshot_chunks(metadata, chunk_size=64 * 1024))
    assert len(chunks) > 10
    assert {len(chunk) for chunk in chunks[:-1]} == {64 * 1024}
    reader = SnapshotReader()
    for chunk in chunks:
        reader.feed(chunk)
    restored = reader.finish()
    assert restored == metadata
    assert restored.removed == {"n5"}
    assert restored.load() == metadata.load()
    assert restored.entry("message-7-é") == metadata.entry("message-7-é")
    assert (restored.applied_index, restored.last_leader_term) == (metadata.applied_index, 3)


@settings(max_examples=30)
@given(st.lists(st.integers(1, 5000), max_size=30))
def test_the_reader_takes_pieces_cut_anywhere(cuts: list[int]) -> None:
    metadata = grown(3000)
    data = snapshot(metadata)
    reader = SnapshotReader()
    position = 0
    for size in cuts:
        reader.feed(data[position : position + size])
        position += size
    reader.feed(data[position:])
    assert reader.finish() == metadata


def test_a_snapshot_is_of_the_moment_its_chunks_were_asked_for() -> None:
    metadata = grown(20_000)
    before = restore(snapshot(metadata))
    chunks = snapshot_chunks(metadata, chunk_size=4096)
    first = next(chunks)
    position = metadata.applied_index
    metadata.apply(Placed((PlacedItem("late", Version(4, 1), 1, ("n1",)),)), 4, position + 1)
    metadata.apply(NodeRemoved("n1"), 4, position + 2)
    assert restore(first + b"".join(chunks)) == before
    assert before != metadata


def test_applying_after_a_restore_goes_on_from_the_snapshot() -> None:
    metadata = grown(2000)
    restored = restore(snapshot(metadata))
    late = Placed((PlacedItem("message-1", Version(9, 1), 5, ("n0", "n4")),))
    next_index = metadata.applied_index + 1
    assert restored.apply(late, 9, next_index) == metadata.apply(late, 9, next_index) == (True,)
    assert restored == metadata


@settings(max_examples=200)
@given(st.data())
def test_any_changed_byte_is_a_value_error(data: st.DataObject) -> None:
    encoded = bytearray(snapshot(grown(300, seed=2)))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ValueError):
        restore(bytes(encoded))


@settings(max_examples=100)
@given(st.data())
def test_a_cut_or_lengthened_snapshot_is_a_value_error(data: st.DataObject) -> None:
    encoded = snapshot(grown(300, seed=3))
    with pytest.raises(ValueError):
        restore(encoded[: data.draw(st.integers(0, len(encoded) - 1))])
    with pytest.raises(ValueError):
        restore(encoded + data.draw(st.binary(min_size=1, max_size=16)))


@given(st.binary(max_size=300))
def test_random_bytes_are_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        restore(data)


def test_a_snapshot_of_another_format_is_refused() -> None:
    encoded = bytearray(snapshot(ClusterMetadata()))
    # A whole, well-framed header that names format 3.
    body = bytearray(encoded[8 : 8 + int.from_bytes(encoded[:4], "big")])
    body[1 + len(b"kayit-metadata")] = 3
    encoded[4:8] = crc32(body).to_bytes(4, "big")
    encoded[8 : 8 + len(body)] = body
    with pytest.raises(ValueError, match="format 3"):
        restore(bytes(encoded))


def test_an_entry_costs_its_id_and_22_bytes_in_a_snapshot() -> None:
    metadata = grown(20_000)
    ids = [key for batch in metadata.index.columns(1000) for key in batch.ids]
    assert len(ids) == 20_000
    id_bytes = sum(len(key.encode()) for key in ids)
    assert len(snapshot(metadata)) < id_bytes + 22 * len(ids) + 1024


def test_a_snapshot_of_format_1_is_read_with_no_tombstones() -> None:
    """As nodes wrote them before DEL: no tombstone count in the header, no T record."""
    metadata = grown(2500)
    encoded = snapshot(metadata)
    records = []
    while encoded:
        length = int.from_bytes(encoded[:4], "big")
        records.append(encoded[8 : 8 + length])
        encoded = encoded[8 + length :]
    header, *middle, tombstones = records
    assert tombstones == b"T"
    old_header = bytearray(header[:-4])  # without the tombstone count
    old_header[1 + len(b"kayit-metadata")] = 1
    old = b"".join(
        len(body).to_bytes(4, "big") + crc32(body).to_bytes(4, "big") + body
        for body in [bytes(old_header), *middle]
    )
    assert restore(old) == metadata
