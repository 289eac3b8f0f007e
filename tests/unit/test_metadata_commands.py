"""Metadata commands: their binary encoding round-trips, and bad bytes are a ValueError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from kayit.version import Version

names = st.text(max_size=30)
message_ids = st.text(min_size=1, max_size=40)
versions = st.builds(Version, st.integers(0, 2**32 - 1), st.integers(0, 2**40 - 1))
items = st.builds(
    PlacedItem,
    message_ids,
    versions,
    st.integers(0, 2**32 - 1),
    st.lists(st.sampled_from(["n1", "n2", "n3", "nœud-4", ""]), max_size=6).map(tuple),
)
commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Formed, names, st.integers(0, 2**16 - 1)),
    st.builds(NodeAdded, names, names),
    st.builds(NodeRemoved, names),
    st.builds(AddressChanged, names, names),
    st.builds(Placed, st.lists(items, max_size=30).map(tuple)),
    st.builds(
        Deleted, st.lists(st.builds(DeletedItem, message_ids, versions), max_size=10).map(tuple)
    ),
    st.builds(Released, names, st.lists(st.tuples(message_ids, versions), max_size=10).map(tuple)),
)


@given(commands)
def test_every_command_survives_encoding(command: Command) -> None:
    assert decode(command.encode()) == command


@given(commands, st.data())
def test_a_cut_or_lengthened_encoding_is_a_value_error(
    command: Command, data: st.DataObject
) -> None:
    encoded = command.encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ValueError):
        decode(encoded[:cut])
    with pytest.raises(ValueError):
        decode(encoded + data.draw(st.binary(min_size=1, max_size=8)))


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_value_error(data: bytes) -> None:
    try:
        command = decode(data)
    except ValueError:
        return
    assert decode(command.encode()) == command


@given(commands, st.data())
def test_a_changed_byte_decodes_or_raises_value_error(
    command: Command, data: st.DataObject
) -> None:
    encoded = bytearray(command.encode())
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(1, 255))
    try:
        changed = decode(bytes(encoded))
    except ValueError:
        return
    assert decode(changed.encode()) == changed


def test_unknown_first_byte_is_refused() -> None:
    for data in (b"", b"\x00", b"\x08", b"\xff" + NodeRemoved("a").encode()[1:]):
        with pytest.raises(ValueError):
            decode(data)


def test_a_holder_list_naming_a_node_the_batch_lacks_is_refused() -> None:
    encoded = bytearray(Placed((PlacedItem("m", Version(1, 1), 7, ("n1",)),)).encode())
    # tag, 1 node ("n1"), 1 list of 1 holder at position 0: point it at position 1.
    assert encoded[11:14] == b"\x01\x00\x00"
    encoded[13] = 1
    with pytest.raises(ValueError, match="names a node"):
        decode(bytes(encoded))


@pytest.mark.parametrize(
    "command",
    [
        Formed("c", 2**16),
        Formed("c", -1),
        NodeAdded("x" * 70_000, "addr"),
        NodeRemoved("\ud800"),  # a lone surrogate has no UTF-8
        Placed((PlacedItem("m", Version(2**32, 1), 0, ()),)),
        Placed((PlacedItem("m", Version(1, 2**40), 0, ()),)),
        Placed((PlacedItem("m", Version(1, 1), 2**32, ()),)),
        Placed((PlacedItem("", Version(1, 1), 0, ()),)),
        Placed((PlacedItem("m" * 70_000, Version(1, 1), 0, ()),)),
        Placed((PlacedItem("m", Version(1, 1), 0, ("n",) * 256),)),
    ],
)
def test_values_the_format_cannot_hold_are_refused_when_encoding(command: Command) -> None:
    with pytest.raises(ValueError):
        command.encode()


def test_a_batch_of_sets_costs_its_ids_and_22_bytes_each() -> None:
    holders = [("n1", "n2", "n3"), ("n2", "n3", "n4"), ("n1", "n3", "n4")]
    batch = Placed(
        tuple(
            PlacedItem(f"message-{i:06d}", Version(3, i + 1), i * 7919, holders[i % 3])
            for i in range(1000)
        )
    )
    encoded = batch.encode()
    assert len(encoded) < 1000 * (len("message-000000") + 22) + 100
    assert decode(encoded) == batch


def test_holders_keep_their_order_and_repeats() -> None:
    batch = Placed(
        (
            PlacedItem("a", Version(1, 1), 1, ("n3", "n1", "n3")),
            PlacedItem("b", Version(1, 2), 2, ("n1", "n3")),
            PlacedItem("c", Version(1, 3), 3, ()),
        )
    )
    decoded = decode(batch.encode())
    assert isinstance(decoded, Placed)
    assert [item.holders for item in decoded.items] == [("n3", "n1", "n3"), ("n1", "n3"), ()]
    assert all(isinstance(item.version, Version) for item in decoded.items)
