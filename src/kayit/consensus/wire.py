"""Raft messages on the wire: ``kayit.consensus.messages`` to Protobuf and back.

An InstallSnapshot goes out as chunks (``RaftSnapshotChunk``) so that a large snapshot never
needs one huge gRPC message; a ``Decoder`` per stream joins them again. Entry kinds travel as
their ``EntryKind`` value and a snapshot's configuration as ``ClusterConfig.encode()``, so that
neither needs a change here when it grows.
"""

from __future__ import annotations

from collections.abc import Iterator

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
from kayit.rpc import kayit_pb2 as pb

CHUNK_BYTES = 1024 * 1024


class WireError(ValueError):
    """A RaftMessage that does not describe a message (an unknown body or entry kind)."""


def encode(
    message: Message, cluster: str, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.RaftMessage]:
    """The wire form of ``message``: one RaftMessage, or the chunks of an InstallSnapshot."""
    if isinstance(message, InstallSnapshot):
        yield from _snapshot_chunks(message, cluster, chunk_bytes)
        return
    wire = _envelope(message, cluster)
    match message:
        case VoteRequest():
            wire.vote_request.CopyFrom(
                pb.RaftVoteRequest(
                    last_log_index=message.last_log_index,
                    last_log_term=message.last_log_term,
                    pre_vote=message.pre_vote,
                    transfer=message.transfer,
                )
            )
        case VoteResponse():
            wire.vote_response.CopyFrom(
                pb.RaftVoteResponse(granted=message.granted, pre_vote=message.pre_vote)
            )
        case AppendRequest():
            wire.append_request.CopyFrom(
                pb.RaftAppendRequest(
                    prev_log_index=message.prev_log_index,
                    prev_log_term=message.prev_log_term,
                    entries=[entry_to_pb(entry) for entry in message.entries],
                    leader_commit=message.leader_commit,
                    read_round=message.read_round,
                )
            )
        case AppendResponse():
            wire.append_response.CopyFrom(
                pb.RaftAppendResponse(
                    success=message.success,
                    match_index=message.match_index,
                    rejected_index=message.rejected_index,
                    last_index=message.last_index,
                    read_round=message.read_round,
                )
            )
        case TimeoutNow():
            wire.timeout_now.SetInParent()
    yield wire


def entry_to_pb(entry: Entry) -> pb.RaftEntry:
    return pb.RaftEntry(index=entry.index, term=entry.term, kind=entry.kind.value, data=entry.data)


def entry_from_pb(wire: pb.RaftEntry) -> Entry:
    try:
        kind = EntryKind(wire.kind)
    except ValueError:
        raise WireError(f"unknown entry kind {wire.kind!r}") from None
    return Entry(index=wire.index, term=wire.term, data=wire.data, kind=kind)


def _envelope(message: Message, cluster: str) -> pb.RaftMessage:
    return pb.RaftMessage(
        cluster=cluster, sender=message.sender, recipient=message.recipient, term=message.term
    )


def _snapshot_chunks(
    message: InstallSnapshot, cluster: str, chunk_bytes: int
) -> Iterator[pb.RaftMessage]:
    snapshot = message.snapshot
    data = memoryview(snapshot.data)
    offset = 0
    while True:
        piece = bytes(data[offset : offset + chunk_bytes])
        last = offset + len(piece) >= len(data)
        wire = _envelope(message, cluster)
        wire.snapshot_chunk.CopyFrom(
            pb.RaftSnapshotChunk(
                index=snapshot.index,
                term=snapshot.term,
                offset=offset,
                data=piece,
                last=last,
                config=snapshot.config.encode() if offset == 0 else b"",
            )
        )
        yield wire
        if last:
            return
        offset += len(piece)


class Decoder:
    """Turns the RaftMessages of one stream back into messages. Chunks of a snapshot must come
    in order on that stream; other messages may come between them."""

    def __init__(self) -> None:
        self._snapshot_key: tuple[str, int, int, int] | None = None
        self._config = ClusterConfig()
        self._pieces: list[bytes] = []
        self._received = 0

    def decode(self, wire: pb.RaftMessage) -> Message | None:
        """The message, or None while a snapshot is still incomplete (or its chunks were out
        of order: then the whole snapshot is dropped, and the leader sends it again)."""
        sender, recipient, term = wire.sender, wire.recipient, wire.term
        body = wire.WhichOneof("body")
        if body == "vote_request":
            vote = wire.vote_request
            return VoteRequest(
                sender=sender,
                recipient=recipient,
                term=term,
                last_log_index=vote.last_log_index,
                last_log_term=vote.last_log_term,
                pre_vote=vote.pre_vote,
                transfer=vote.transfer,
            )
        if body == "vote_response":
            return VoteResponse(
                sender=sender,
                recipient=recipient,
                term=term,
                granted=wire.vote_response.granted,
                pre_vote=wire.vote_response.pre_vote,
            )
        if body == "append_request":
            append = wire.append_request
            return AppendRequest(
                sender=sender,
                recipient=recipient,
                term=term,
                prev_log_index=append.prev_log_index,
                prev_log_term=append.prev_log_term,
                entries=tuple(entry_from_pb(entry) for entry in append.entries),
                leader_commit=append.leader_commit,
                read_round=append.read_round,
            )
        if body == "append_response":
            answer = wire.append_response
            return AppendResponse(
                sender=sender,
                recipient=recipient,
                term=term,
                success=answer.success,
                match_index=answer.match_index,
                rejected_index=answer.rejected_index,
                last_index=answer.last_index,
                read_round=answer.read_round,
            )
        if body == "snapshot_chunk":
            return self._add_chunk(wire)
        if body == "timeout_now":
            return TimeoutNow(sender=sender, recipient=recipient, term=term)
        raise WireError(f"a RaftMessage without a known body ({body})")

    def _add_chunk(self, wire: pb.RaftMessage) -> InstallSnapshot | None:
        chunk = wire.snapshot_chunk
        key = (wire.sender, wire.term, chunk.index, chunk.term)
        if chunk.offset == 0:
            self._snapshot_key = None
            self._config = _config_from_pb(chunk.config)
            self._snapshot_key, self._pieces, self._received = key, [], 0
        elif key != self._snapshot_key or chunk.offset != self._received:
            self._snapshot_key, self._pieces, self._received = None, [], 0
            return None
        self._pieces.append(chunk.data)
        self._received += len(chunk.data)
        if not chunk.last:
            return None
        data = b"".join(self._pieces)
        self._snapshot_key, self._pieces, self._received = None, [], 0
        return InstallSnapshot(
            sender=wire.sender,
            recipient=wire.recipient,
            term=wire.term,
            snapshot=Snapshot(index=chunk.index, term=chunk.term, data=data, config=self._config),
        )


def _config_from_pb(data: bytes) -> ClusterConfig:
    try:
        return ClusterConfig.decode(data)
    except (ValueError, KeyError, TypeError) as error:
        raise WireError(f"not a cluster configuration: {data!r}") from error
