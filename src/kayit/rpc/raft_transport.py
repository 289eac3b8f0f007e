"""Outgoing Raft messages: one long-lived gRPC stream per peer, fed from a bounded queue.

Raft tolerates lost messages but not stale ones piling up: a peer's queue keeps only the most
recent ``queue_limit`` messages (the oldest are dropped, never the sender blocked), a stream
that stops draining is abandoned and reopened, and a peer that is down is retried with backoff
while what was queued for it is discarded. Whatever was queued is sent in batches, many messages
per stream write, because gRPC in Python is costly per write, not per byte.

A snapshot goes out in chunks, one per write, with the other messages (heartbeats above all)
in between, so that a large snapshot neither delays them nor needs one huge message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from kayit.consensus.messages import InstallSnapshot, Message
from kayit.consensus.wire import CHUNK_BYTES, encode
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_channel
from kayit.rpc.kayit_pb2_grpc import RaftStub
from kayit.supervision import supervise
from kayit.tls.identity import TlsIdentity

log = logging.getLogger(__name__)

# What tells one snapshot sent to a peer from another: (message term, snapshot index and term).
_SnapshotKey = tuple[int, int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportOptions:
    # Per peer; the oldest queued message is dropped when a new one finds the queue full.
    queue_limit: int = 1024
    # Messages per stream write, by their encoded size (a snapshot chunk rides on top).
    batch_bytes: int = 4 * 1024 * 1024
    chunk_bytes: int = CHUNK_BYTES
    # A write that takes longer abandons the stream: the peer stopped reading.
    stall_seconds: float = 5.0
    # The leader repeats InstallSnapshot on each heartbeat until the peer answers: the same
    # snapshot, sent whole this recently on a stream that is still up, is not sent again.
    snapshot_resend_seconds: float = 5.0
    tls: TlsIdentity | None = None  # mutual TLS to every peer


class GrpcRaftTransport:
    """The driver's RaftTransport over gRPC: sends each message to its recipient, resolving
    node ids to ``host:port`` with ``resolve`` (None: unknown, and the message is dropped)."""

    def __init__(
        self,
        cluster: str,
        resolve: Callable[[str], str | None],
        options: TransportOptions | None = None,
    ) -> None:
        self.cluster = cluster
        self._resolve = resolve
        self._options = options or TransportOptions()
        self._senders: dict[str, _PeerSender] = {}

    def send(self, message: Message) -> None:
        sender = self._senders.get(message.recipient)
        if sender is None:
            sender = self._senders[message.recipient] = _PeerSender(
                message.recipient, self.cluster, self._resolve, self._options
            )
        sender.push(message)

    async def close(self) -> None:
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            await sender.close()


_MIN_BACKOFF = 0.05
_MAX_BACKOFF = 1.0


class _PeerSender:
    def __init__(
        self,
        peer: str,
        cluster: str,
        resolve: Callable[[str], str | None],
        options: TransportOptions,
    ) -> None:
        self.peer = peer
        self._cluster = cluster
        self._resolve = resolve
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._queue: deque[Message] = deque(maxlen=options.queue_limit)
        self._waiting = asyncio.Event()
        # The snapshot being sent, chunk by chunk, and the last one sent whole.
        self._snapshot: tuple[_SnapshotKey, Iterator[pb.RaftMessage]] | None = None
        self._snapshot_sent: tuple[_SnapshotKey, float] | None = None
        self._address: str | None = None
        self._channel: grpc.aio.Channel | None = None
        self._backoff = _MIN_BACKOFF
        # The batch being written: a stream that fails takes it along, and it is written
        # again on the next one (Raft takes a message twice as once).
        self._unsent: pb.RaftBatch | None = None
        # A stream that worked and then failed is replaced at once, once: after the peer
        # restarted, the first write tells the old connection is gone, and what it carried
        # (a vote, say) should not wait for an election timeout.
        self._retried = False
        self._task = supervise(f"the Raft sender to {peer}", self._run)

    def push(self, message: Message) -> None:
        self._queue.append(message)
        self._waiting.set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._channel is not None:
            await self._channel.close()

    async def _run(self) -> None:
        while True:
            await self._has_work()
            address = self._resolve(self.peer)
            if address is None:
                self._discard()
                continue
            try:
                await self._stream(address)
                continue  # the peer's address changed
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError) as error:
                log.debug("raft stream to %s at %s failed: %s", self.peer, address, error)
            except Exception:
                log.exception("raft stream to %s at %s failed", self.peer, address)
            if self._backoff == _MIN_BACKOFF and not self._retried:
                self._retried = True
                continue
            self._discard()
            await asyncio.sleep(self._backoff)
            self._backoff = min(2 * self._backoff, _MAX_BACKOFF)

    async def _stream(self, address: str) -> None:
        """Feed one stream until it fails or the peer's address changes."""
        call = RaftStub(await self._channel_to(address)).Send()
        try:
            while True:
                await self._has_work()
                if self._resolve(self.peer) != address:
                    return
                batch = self._unsent if self._unsent is not None else self._next_batch()
                if batch.messages:
                    self._unsent = batch
                    # A write that does not finish means the peer stopped reading (paused, or
                    # the connection died without a reset): start over on a new stream. Not
                    # wait_for, which in 3.11 may swallow a cancellation that races the write.
                    async with asyncio.timeout(self._options.stall_seconds):
                        await call.write(batch)
                    self._backoff = _MIN_BACKOFF
                    self._retried = False
                self._unsent = None
        finally:
            call.cancel()

    async def _channel_to(self, address: str) -> grpc.aio.Channel:
        if self._channel is None or address != self._address:
            if self._channel is not None:
                await self._channel.close()
            self._channel = open_channel(address, self._options.tls)
            self._address = address
        return self._channel

    async def _has_work(self) -> None:
        while not self._queue and self._snapshot is None and self._unsent is None:
            self._waiting.clear()
            await self._waiting.wait()

    def _next_batch(self) -> pb.RaftBatch:
        batch = pb.RaftBatch()
        size = 0
        while self._queue and size < self._options.batch_bytes:
            message = self._queue.popleft()
            if isinstance(message, InstallSnapshot):
                self._start_snapshot(message)
                continue
            for wire in encode(message, self._cluster):
                batch.messages.append(wire)
                size += wire.ByteSize()
        if self._snapshot is not None:
            key, chunks = self._snapshot
            chunk = next(chunks)
            batch.messages.append(chunk)
            if chunk.snapshot_chunk.last:
                self._snapshot = None
                self._snapshot_sent = (key, self._loop.time())
        return batch

    def _start_snapshot(self, message: InstallSnapshot) -> None:
        key = (message.term, message.snapshot.index, message.snapshot.term)
        if self._snapshot is not None and self._snapshot[0] == key:
            return
        if self._snapshot_sent is not None:
            sent, when = self._snapshot_sent
            if sent == key and self._loop.time() - when < self._options.snapshot_resend_seconds:
                return
        # A newer snapshot replaces one half sent: the receiver starts again at offset 0.
        self._snapshot = (key, encode(message, self._cluster, self._options.chunk_bytes))

    def _discard(self) -> None:
        """Forget what was queued for a peer we could not reach: stale by the time it is back,
        and the leader sends what is still needed again."""
        self._queue.clear()
        self._unsent = None
        self._snapshot = None
        self._snapshot_sent = None
