"""Incoming Raft messages: the gRPC servicer that hands each one to the node's driver."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import grpc

from kayit.consensus.messages import Message
from kayit.consensus.wire import Decoder, WireError
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.kayit_pb2_grpc import RaftServicer

log = logging.getLogger(__name__)


class RaftService(RaftServicer):  # type: ignore[misc]  # generated base class is untyped
    """``deliver`` takes each message of this cluster at once, without blocking (the driver
    queues it); messages of another cluster, or that cannot be decoded, are dropped."""

    def __init__(self, cluster: str, deliver: Callable[[Message], None]) -> None:
        self.cluster = cluster
        self._deliver = deliver

    # The method name comes from kayit.proto.
    async def Send(
        self, request_iterator: AsyncIterator[pb.RaftBatch], context: grpc.aio.ServicerContext
    ) -> pb.RaftSendReply:
        decoder = Decoder()  # per stream: a snapshot's chunks arrive on one stream, in order
        foreign: str | None = None
        async for batch in request_iterator:
            for wire in batch.messages:
                if wire.cluster != self.cluster:
                    if foreign != wire.cluster:
                        foreign = wire.cluster
                        log.warning(
                            "dropping raft messages of cluster %r from %s (we are %r)",
                            wire.cluster,
                            wire.sender,
                            self.cluster,
                        )
                    continue
                try:
                    message = decoder.decode(wire)
                except WireError as error:
                    log.warning("dropping a raft message from %s: %s", wire.sender, error)
                    continue
                if message is not None:
                    self._deliver(message)
        return pb.RaftSendReply()
