"""The gRPC service every node runs: copies in and out of its store for the leader, the
admission and removal of nodes, status, clients' commands forwarded to it while it leads, and
``kayit recover``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from kayit.cluster.holders import held_here, store_copy
from kayit.cluster.metadata_group import Admission, AdmissionRefused, NotLeading
from kayit.cluster.recovery import LogIncomplete, Recovery, RecoveryRefused
from kayit.cluster.removal import RemovalRefused, RemovedMember
from kayit.cluster.transport import Copy
from kayit.protocol.commands import validate_id
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.convert import copy_to_pb, version_from_pb, version_to_pb
from kayit.rpc.kayit_pb2_grpc import NodeServicer
from kayit.rpc.peers import TERM_METADATA
from kayit.rpc.recover import state_to_pb
from kayit.storage.store import MessageStore

log = logging.getLogger(__name__)

_INVENTORY_CHUNK = 10_000  # entries per streamed message: ~0.5 MB


class NodeService(NodeServicer):  # type: ignore[misc]  # generated base class is untyped
    def __init__(
        self,
        *,
        store: MessageStore,
        term: Callable[[], int],
        admit: Callable[[str, str], Awaitable[Admission]],
        remove_member: Callable[[str], Awaitable[RemovedMember]],
        status: Callable[[], pb.StatusReply],
        execute: Callable[[pb.ClientBatch], Awaitable[pb.ClientResults]],
        keys: Callable[[pb.KeysRequest], Awaitable[pb.KeysReply]],
        recovery: Recovery | None = None,
    ) -> None:
        """``term``: this node's Raft term now. ``admit(node_id, address)``: admits a node
        while this one leads (raises NotLeading, AdmissionRefused). ``remove_member(member)``:
        removes the member a node id or address names while this one leads (raises
        NotLeading, RemovalRefused). ``execute``: carries out clients' commands that another
        node forwarded; ``keys``: a page of their SCAN. ``recovery``: this node's side of
        ``kayit recover``; without it the node answers its calls UNIMPLEMENTED."""
        self.store = store
        self._term = term
        self._admit = admit
        self._remove_member = remove_member
        self._status = status
        self.execute = execute
        self._keys = keys
        self._recovery = recovery
        self._fence = 0  # the highest term a call that changes copies came with

    # Method names come from kayit.proto.
    async def Store(
        self, request: pb.StoredMessage, context: grpc.aio.ServicerContext
    ) -> pb.StoreResult:
        await _check_ids([request.id], context)
        await self._check_term(context)
        return await self._store(request)

    async def StoreMany(
        self, request: pb.StoreBatch, context: grpc.aio.ServicerContext
    ) -> pb.StoreBatchResult:
        await _check_ids([m.id for m in request.messages], context)
        await self._check_term(context)
        results = await asyncio.gather(*(self._store(m) for m in request.messages))
        return pb.StoreBatchResult(results=results)

    async def Retrieve(
        self, request: pb.MessageId, context: grpc.aio.ServicerContext
    ) -> pb.RetrieveResult:
        await _check_ids([request.id], context)
        if request.HasField("version"):
            version = version_from_pb(request.version)
            payload = await self.store.get_version(request.id, version)
            if payload is None:
                return pb.RetrieveResult(found=False)
            copy = Copy(request.id, payload, version)
        else:
            found = await self.store.get_verified(request.id)
            if found is None:
                return pb.RetrieveResult(found=False)
            copy = Copy(request.id, *found)
        return pb.RetrieveResult(found=True, message=copy_to_pb(copy))

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinReply:
        try:
            admission = await self._admit(request.node_id, request.address)
        except NotLeading as not_leading:
            return pb.JoinReply(
                accepted=False,
                reason="this node does not lead",
                leader_address=not_leading.leader_address or "",
            )
        except AdmissionRefused as refused:
            return pb.JoinReply(accepted=False, refused=True, reason=str(refused))
        return pb.JoinReply(
            accepted=True,
            cluster_id=admission.cluster_id,
            tolerance=admission.tolerance,
            nodes=dict(admission.nodes),
        )

    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveMemberReply:
        try:
            removed = await self._remove_member(request.member)
        except NotLeading as not_leading:
            if not not_leading.leader_address:
                return pb.RemoveMemberReply(
                    error="this node knows of no leader now (an election, or too few voters alive)"
                )
            return pb.RemoveMemberReply(
                error="this node does not lead", leader_address=not_leading.leader_address
            )
        except RemovalRefused as refused:
            return pb.RemoveMemberReply(error=str(refused), refused=True)
        return pb.RemoveMemberReply(removed=True, node_id=removed.node_id, address=removed.address)

    async def Count(
        self, request: pb.CountRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountReply:
        return pb.CountReply(message_count=self.store.count)

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        return self._status()

    async def Inventory(
        self, request: pb.InventoryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InventoryChunk]:
        held = await held_here(self.store, request.verify)
        entries = [
            pb.InventoryEntry(id=key, version=version_to_pb(version), pending=pending)
            for copies, pending in ((held.committed, False), (held.pending, True))
            for key, version in copies
        ]
        for start in range(0, len(entries), _INVENTORY_CHUNK):
            yield pb.InventoryChunk(entries=entries[start : start + _INVENTORY_CHUNK])

    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResult:
        await _check_ids([e.id for e in request.entries], context)
        await self._check_term(context)
        copies = [(e.id, version_from_pb(e.version)) for e in request.entries if not e.pending]
        deleted = await self.store.delete(copies)
        if deleted:
            log.info("deleted %d copies the metadata no longer places here", deleted)
        return pb.DeleteResult(deleted=deleted)

    async def Execute(
        self, request: pb.ClientBatch, context: grpc.aio.ServicerContext
    ) -> pb.ClientResults:
        return await self.execute(request)

    async def Keys(
        self, request: pb.KeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.KeysReply:
        return await self._keys(request)

    async def RecoveryState(
        self, request: pb.RecoveryStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecoveryStateReply:
        recovery = await self._recovery_or_abort(context)
        return state_to_pb(await recovery.state())

    async def Recover(
        self, request: pb.RecoverRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecoverReply:
        recovery = await self._recovery_or_abort(context)
        try:
            recovered = await recovery.recover(dict(request.survivors))
        except LogIncomplete as incomplete:
            return pb.RecoverReply(error=str(incomplete), log_incomplete=True)
        except RecoveryRefused as refused:
            return pb.RecoverReply(error=str(refused))
        return pb.RecoverReply(
            recovered=True,
            leader_id=recovered.leader_id,
            leader_address=recovered.leader_address,
            term=recovered.term,
            adopted=recovered.adopted,
            removed=recovered.removed,
            message_count=recovered.message_count,
        )

    async def _recovery_or_abort(self, context: grpc.aio.ServicerContext) -> Recovery:
        if self._recovery is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this node cannot recover")
        assert self._recovery is not None
        return self._recovery

    async def _store(self, message: pb.StoredMessage) -> pb.StoreResult:
        copy = Copy(
            message.id, message.payload, version_from_pb(message.version), message.committed
        )
        stored, current = await store_copy(self.store, copy)
        return pb.StoreResult(stored=stored, current=version_to_pb(current))

    async def _check_term(self, context: grpc.aio.ServicerContext) -> None:
        """Refuse a call from a leader of an older term than this node knows: a leader that
        was deposed and does not know it yet changes no copy here."""
        sent = dict(context.invocation_metadata() or ()).get(TERM_METADATA, "")
        term = int(sent) if str(sent).isdecimal() else 0
        known = max(self._fence, self._term())
        if term < known:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"term {term} is older than term {known}, which this node knows of",
            )
        self._fence = term


async def _check_ids(ids: list[str], context: grpc.aio.ServicerContext) -> None:
    """Peers get the same id rules as clients; a bad id fails the whole call."""
    for message_id in ids:
        problem = validate_id(message_id)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{message_id!r}: {problem}")
