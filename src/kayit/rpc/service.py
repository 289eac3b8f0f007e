"""The gRPC service every node runs. Join, Heartbeat and Execute are answered only by the
leader: who that is, the node says through ``leading`` at each call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from kayit.cluster.leader import Leader
from kayit.cluster.membership import Arrival
from kayit.protocol.commands import validate_id
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.convert import version_from_pb, version_to_pb
from kayit.rpc.kayit_pb2_grpc import NodeServicer
from kayit.storage.store import MessageStore

log = logging.getLogger(__name__)

_INVENTORY_CHUNK = 10_000  # entries per streamed message: ~0.5 MB


class NodeService(NodeServicer):  # type: ignore[misc]  # generated base class is untyped
    def __init__(
        self,
        *,
        address: str,
        store: MessageStore,
        leading: Callable[[], Leader | None],
        execute: Callable[[pb.ClientBatch], Awaitable[pb.ClientResults]],
        heartbeat_ms: int,
        on_join: Callable[[str], None] | None = None,
        on_revived: Callable[[str], None] | None = None,
    ) -> None:
        """``leading``: this node's Leader while it leads, else None. ``execute``: carries out
        clients' commands that another node forwarded. ``on_join``: a member (re)joined,
        maybe after a restart. ``on_revived``: a member counted dead heartbeats again. Either
        way its copies are to be reconciled."""
        self.on_join = on_join
        self.on_revived = on_revived
        self.address = address
        self.store = store
        self.leading = leading
        self.execute = execute
        self.heartbeat_ms = heartbeat_ms

    # Method names come from kayit.proto.
    async def Store(
        self, request: pb.StoredMessage, context: grpc.aio.ServicerContext
    ) -> pb.StoreResult:
        await _check_ids([request.id], context)
        return await self._store(request)

    async def StoreMany(
        self, request: pb.StoreBatch, context: grpc.aio.ServicerContext
    ) -> pb.StoreBatchResult:
        await _check_ids([m.id for m in request.messages], context)
        results = await asyncio.gather(*(self._store(m) for m in request.messages))
        return pb.StoreBatchResult(results=results)

    async def Retrieve(
        self, request: pb.MessageId, context: grpc.aio.ServicerContext
    ) -> pb.RetrieveResult:
        await _check_ids([request.id], context)
        copy = await self.store.get_verified(request.id)
        if copy is None:
            return pb.RetrieveResult(found=False)
        payload, version = copy
        message = pb.StoredMessage(id=request.id, payload=payload, version=version_to_pb(version))
        return pb.RetrieveResult(found=True, message=message)

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinReply:
        leader = self.leading()
        if leader is None:
            return pb.JoinReply(accepted=False, reason=f"{self.address} is not the leader")
        if request.address == self.address:
            return pb.JoinReply(accepted=False, reason="that address is the leader's own")
        if leader.membership.heard_from(request.address, request.message_count) is Arrival.NEW:
            log.info("member %s joined", request.address)
        if self.on_join is not None:
            self.on_join(request.address)  # its copies are reconciled with the index
        return pb.JoinReply(accepted=True, heartbeat_ms=self.heartbeat_ms)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatReply:
        leader = self.leading()
        if leader is None or not leader.membership.is_known(request.address):
            return pb.HeartbeatReply(known=False)
        arrival = leader.membership.heard_from(request.address, request.message_count)
        if arrival is Arrival.REVIVED and self.on_revived is not None:
            # Dead meanwhile (paused or cut off): SETs went elsewhere, copies it stored late
            # are surplus, and repair may have moved its copies.
            self.on_revived(request.address)
        return pb.HeartbeatReply(known=True)

    async def Count(
        self, request: pb.CountRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountReply:
        return pb.CountReply(message_count=self.store.count)

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        leader = self.leading()
        if leader is None:
            return pb.StatusReply(
                role="member", address=self.address, message_count=self.store.count
            )
        members = [
            pb.MemberStatus(address=m.address, alive=m.alive, assigned=m.assigned, stored=m.stored)
            for m in leader.member_counts()
        ]
        return pb.StatusReply(
            role="leader",
            address=self.address,
            message_count=len(leader.index),
            tolerance=leader.tolerance,
            members=members,
        )

    async def Inventory(
        self, request: pb.InventoryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InventoryChunk]:
        held = await self.store.inventory(request.verify)
        for start in range(0, len(held), _INVENTORY_CHUNK):
            entries = [
                pb.InventoryEntry(id=key, version=version_to_pb(version))
                for key, version in held[start : start + _INVENTORY_CHUNK]
            ]
            yield pb.InventoryChunk(entries=entries)

    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResult:
        await _check_ids([e.id for e in request.entries], context)
        copies = [(e.id, version_from_pb(e.version)) for e in request.entries]
        deleted = await self.store.delete(copies)
        if deleted:
            log.info("deleted %d copies the leader no longer places here", deleted)
        return pb.DeleteResult(deleted=deleted)

    async def Execute(
        self, request: pb.ClientBatch, context: grpc.aio.ServicerContext
    ) -> pb.ClientResults:
        return await self.execute(request)

    async def _store(self, message: pb.StoredMessage) -> pb.StoreResult:
        outcome = await self.store.put(
            message.id, message.payload, version_from_pb(message.version)
        )
        return pb.StoreResult(stored=outcome.stored, current=version_to_pb(outcome.current))


async def _check_ids(ids: list[str], context: grpc.aio.ServicerContext) -> None:
    """Peers get the same id rules as clients; a bad id fails the whole call."""
    for message_id in ids:
        problem = validate_id(message_id)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{message_id!r}: {problem}")
