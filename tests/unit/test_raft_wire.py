"""Raft messages survive the trip to Protobuf and back, snapshots in chunks included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.consensus.membership import ClusterConfig
from kayit.consensus.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
    Snapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from kayit.consensus.wire import Decoder, WireError, encode
from kayit.rpc import kayit_pb2 as pb

u64 = st.integers(min_value=0, max_value=2**64 - 1)
node_ids = st.text(min_size=1, max_size=12)
entries = st.builds(
    Entry, index=u64, term=u64, data=st.binary(max_size=64), kind=st.sampled_from(EntryKind)
)


@st.composite
def cluster_configs(draw: st.DrawFn) -> ClusterConfig:
    members = draw(st.lists(node_ids, unique=True, max_size=6))
    voters = draw(st.integers(min_value=0, max_value=len(members)))
    return ClusterConfig(frozenset(members[:voters]), frozenset(members[voters:]))


snapshots = st.builds(
    Snapshot, index=u64, term=u64, data=st.binary(max_size=300), config=cluster_configs()
)


def envelope() -> dict[str, st.SearchStrategy[object]]:
    return {"sender": node_ids, "recipient": node_ids, "term": u64}


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        VoteRequest,
        **envelope(),
        last_log_index=u64,
        last_log_term=u64,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    st.builds(VoteResponse, **envelope(), granted=st.booleans(), pre_vote=st.booleans()),
    st.builds(
        AppendRequest,
        **envelope(),
        prev_log_index=u64,
        prev_log_term=u64,
        entries=st.lists(entries, max_size=5).map(tuple),
        leader_commit=u64,
        read_round=u64,
    ),
    st.builds(
        AppendResponse,
        **envelope(),
        success=st.booleans(),
        match_index=u64,
        rejected_index=u64,
        last_index=u64,
        read_round=u64,
    ),
    st.builds(
        InstallSnapshot,
        **envelope(),
        snapshot=snapshots,
    ),
    st.builds(TimeoutNow, **envelope()),
)


def through_the_wire(message: Message, chunk_bytes: int = 1024) -> list[Message]:
    """Encode, serialise, parse and decode, as sender and receiver do."""
    decoder = Decoder()
    decoded = []
    for wire in encode(message, "c1", chunk_bytes):
        assert wire.cluster == "c1"
        received = pb.RaftMessage.FromString(wire.SerializeToString())
        result = decoder.decode(received)
        if result is not None:
            decoded.append(result)
    return decoded


@given(messages, st.integers(min_value=1, max_value=64))
def test_every_message_comes_back_equal(message: Message, chunk_bytes: int) -> None:
    assert through_the_wire(message, chunk_bytes) == [message]


@given(st.binary(min_size=1, max_size=2000), st.integers(min_value=1, max_value=300))
def test_a_snapshot_travels_in_chunks_of_at_most_the_chunk_size(
    data: bytes, chunk_bytes: int
) -> None:
    message = InstallSnapshot(sender="a", recipient="b", term=3, snapshot=Snapshot(7, 2, data))
    chunks = list(encode(message, "c1", chunk_bytes))
    assert len(chunks) == -(-len(data) // chunk_bytes)
    assert all(len(chunk.snapshot_chunk.data) <= chunk_bytes for chunk in chunks)
    assert [chunk.snapshot_chunk.last for chunk in chunks] == [False] * (len(chunks) - 1) + [True]


@given(
    st.binary(min_size=2, max_size=500),
    st.lists(messages.filter(lambda m: not isinstance(m, InstallSnapshot)), max_size=6),
    st.data(),
)
def test_other_messages_may_come_between_the_chunks(
    data: bytes, others: list[Message], pick: st.DataObject
) -> None:
    snapshot = InstallSnapshot(sender="a", recipient="b", term=3, snapshot=Snapshot(9, 3, data))
    stream = list(encode(snapshot, "c1", chunk_bytes=max(1, len(data) // 4)))
    for other in others:
        # Anywhere before the last chunk, so that the snapshot is the last message out.
        at = pick.draw(st.integers(min_value=0, max_value=len(stream) - 1))
        stream.insert(at, next(encode(other, "c1")))
    decoder = Decoder()
    out = [m for m in map(decoder.decode, stream) if m is not None]
    assert out[-1] == snapshot
    assert sorted(map(repr, out[:-1])) == sorted(map(repr, others))


@given(st.binary(min_size=3, max_size=300), st.data())
def test_a_snapshot_missing_a_chunk_is_dropped_whole(data: bytes, pick: st.DataObject) -> None:
    message = InstallSnapshot(sender="a", recipient="b", term=3, snapshot=Snapshot(9, 3, data))
    chunks = list(encode(message, "c1", chunk_bytes=max(1, len(data) // 3)))
    missing = pick.draw(st.integers(min_value=0, max_value=len(chunks) - 2))
    decoder = Decoder()
    out = [decoder.decode(chunk) for i, chunk in enumerate(chunks) if i != missing]
    assert out == [None] * (len(chunks) - 1)


def test_chunks_of_an_older_snapshot_do_not_mix_into_a_newer_one() -> None:
    old = InstallSnapshot(sender="a", recipient="b", term=3, snapshot=Snapshot(5, 3, b"x" * 10))
    new = InstallSnapshot(sender="a", recipient="b", term=3, snapshot=Snapshot(9, 3, b"y" * 10))
    old_chunks = list(encode(old, "c1", chunk_bytes=4))
    new_chunks = list(encode(new, "c1", chunk_bytes=4))
    decoder = Decoder()
    # The old snapshot is abandoned half way; the new one starts again at offset 0.
    stream = [old_chunks[0], *new_chunks[:2], old_chunks[1], new_chunks[2]]
    assert [decoder.decode(chunk) for chunk in stream] == [None] * 5
    fresh = Decoder()
    stream = [old_chunks[0], *new_chunks]
    assert [fresh.decode(chunk) for chunk in stream][-1] == new


def test_entry_kinds_travel_by_value() -> None:
    for kind in EntryKind:
        wire = next(encode(_append(Entry(1, 1, b"d", kind)), "c1"))
        assert wire.append_request.entries[0].kind == kind.value


def test_an_unknown_entry_kind_is_refused() -> None:
    wire = next(encode(_append(Entry(1, 1, b"d")), "c1"))
    wire.append_request.entries[0].kind = "from-the-future"
    with pytest.raises(WireError, match="from-the-future"):
        Decoder().decode(wire)


def test_a_snapshot_with_an_unreadable_configuration_is_refused() -> None:
    message = InstallSnapshot(sender="a", recipient="b", term=3, snapshot=Snapshot(5, 3, b"x"))
    wire = next(encode(message, "c1"))
    wire.snapshot_chunk.config = b"not json"
    with pytest.raises(WireError):
        Decoder().decode(wire)


def test_a_message_without_a_body_is_refused() -> None:
    with pytest.raises(WireError):
        Decoder().decode(pb.RaftMessage(cluster="c1", sender="a", recipient="b", term=1))


def _append(entry: Entry) -> AppendRequest:
    return AppendRequest(
        sender="a",
        recipient="b",
        term=1,
        prev_log_index=0,
        prev_log_term=0,
        entries=(entry,),
        leader_commit=0,
    )
