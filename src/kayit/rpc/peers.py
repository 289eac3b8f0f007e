"""gRPC clients: channels to the other nodes, and the leader's MemberTransport over them."""

from __future__ import annotations

import asyncio

import grpc

from kayit.cluster.transport import Copy, Deposed, Held, MemberSlow, MemberUnreachable
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_channel
from kayit.rpc.convert import copy_to_pb, version_from_pb, version_to_pb
from kayit.rpc.kayit_pb2_grpc import NodeStub
from kayit.rpc.security import ClusterId, cluster_metadata
from kayit.tls.identity import TlsIdentity
from kayit.version import Version


class Peers:
    """One channel per peer address, opened on first use and kept; mutual TLS with ``tls``.
    Calls on the data path carry ``metadata()``: the cluster this node belongs to."""

    def __init__(
        self, timeout: float, tls: TlsIdentity | None = None, cluster_id: ClusterId = lambda: None
    ) -> None:
        self.timeout = timeout
        self.tls = tls
        self._cluster_id = cluster_id
        self._stubs: dict[str, tuple[grpc.aio.Channel, NodeStub]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return cluster_metadata(self._cluster_id())

    def stub(self, address: str) -> NodeStub:
        return self._open(address)[1]

    def channel(self, address: str) -> grpc.aio.Channel:
        """The channel under ``stub(address)``: its state tells whether the peer is reachable."""
        return self._open(address)[0]

    def _open(self, address: str) -> tuple[grpc.aio.Channel, NodeStub]:
        known = self._stubs.get(address)
        if known is None:
            channel = open_channel(address, self.tls)
            known = self._stubs[address] = (channel, NodeStub(channel))
        return known

    def forget(self, address: str) -> None:
        """Drop the channel to a peer that restarted: one that failed while it was down
        would wait out its reconnect backoff, and fail calls meanwhile. Calls still on it
        may finish: cut short, they would count against a peer that did nothing wrong."""
        known = self._stubs.pop(address, None)
        if known is not None:
            closing = asyncio.get_running_loop().create_task(known[0].close(self.timeout))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()


TERM_METADATA = "kayit-term"  # the sender's Raft term, on every call that changes copies


class GrpcMemberTransport:
    """MemberTransport over gRPC, for a leader of ``term``: the calls that change copies
    carry it, and a node that knows a newer term refuses them."""

    def __init__(self, peers: Peers, term: int) -> None:
        self._peers = peers
        self._term = ((TERM_METADATA, str(term)),)

    async def store_many(self, address: str, copies: list[Copy], timeout: float) -> None:
        request = pb.StoreBatch(messages=[copy_to_pb(copy) for copy in copies])
        try:
            reply = await self._peers.stub(address).StoreMany(
                request, timeout=timeout, metadata=self._term + self._peers.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error
        if len(reply.results) != len(copies):
            raise MemberUnreachable(f"answered {len(reply.results)} of {len(copies)} copies")
        for copy, result in zip(copies, reply.results, strict=True):
            current = version_from_pb(result.current)
            if not result.stored and current != copy.version and not copy.committed:
                raise MemberUnreachable(
                    f"holds {copy.message_id!r} at {current}, newer than {copy.version}"
                )

    async def retrieve(self, address: str, message_id: str, version: Version) -> bytes | None:
        request = pb.MessageId(id=message_id, version=version_to_pb(version))
        try:
            reply = await self._peers.stub(address).Retrieve(
                request, timeout=self._peers.timeout, metadata=self._peers.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error
        if not reply.found or version_from_pb(reply.message.version) != version:
            return None
        return bytes(reply.message.payload)

    async def inventory(self, address: str, verify: bool) -> Held:
        held = Held()
        try:
            # Reading every copy with verify=True takes time: no deadline beyond the channel's.
            call = self._peers.stub(address).Inventory(
                pb.InventoryRequest(verify=verify), metadata=self._peers.metadata()
            )
            async for chunk in call:
                for entry in chunk.entries:
                    copies = held.pending if entry.pending else held.committed
                    copies.append((entry.id, version_from_pb(entry.version)))
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error
        return held

    async def delete(self, address: str, copies: list[tuple[str, Version]]) -> None:
        entries = [pb.InventoryEntry(id=key, version=version_to_pb(v)) for key, v in copies]
        try:
            await self._peers.stub(address).Delete(
                pb.DeleteRequest(entries=entries),
                timeout=self._peers.timeout,
                metadata=self._term + self._peers.metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error


def _failure(error: grpc.aio.AioRpcError) -> MemberUnreachable | Deposed:
    """A deadline that passed says the member is slow, not that it is gone: the failure
    detector, not one late answer, decides that it is dead. FAILED_PRECONDITION is the
    term check (NodeService): the caller was deposed."""
    text = f"{error.code().name}: {error.details()}"
    if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
        return Deposed(text)
    kind = MemberSlow if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED else MemberUnreachable
    return kind(text)
