"""gRPC clients: the leader's MemberTransport, and a member's link to its leader."""

from __future__ import annotations

import asyncio

import grpc

from kayit.cluster.transport import Copy, MemberSlow, MemberUnreachable
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_channel
from kayit.rpc.convert import copy_from_pb, copy_to_pb, version_from_pb, version_to_pb
from kayit.rpc.kayit_pb2_grpc import NodeStub
from kayit.version import Version


class Peers:
    """One channel per peer address, opened on first use and kept."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._stubs: dict[str, tuple[grpc.aio.Channel, NodeStub]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def stub(self, address: str) -> NodeStub:
        return self._open(address)[1]

    def channel(self, address: str) -> grpc.aio.Channel:
        """The channel under ``stub(address)``: its state tells whether the peer is reachable."""
        return self._open(address)[0]

    def _open(self, address: str) -> tuple[grpc.aio.Channel, NodeStub]:
        known = self._stubs.get(address)
        if known is None:
            channel = open_channel(address)
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


class GrpcMemberTransport:
    """MemberTransport over gRPC: StoreMany and Retrieve."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    async def store_many(self, address: str, copies: list[Copy], timeout: float) -> None:
        request = pb.StoreBatch(messages=[copy_to_pb(copy) for copy in copies])
        try:
            reply = await self._peers.stub(address).StoreMany(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error
        if len(reply.results) != len(copies):
            raise MemberUnreachable(f"answered {len(reply.results)} of {len(copies)} copies")

    async def retrieve(self, address: str, message_id: str) -> Copy | None:
        try:
            reply = await self._peers.stub(address).Retrieve(
                pb.MessageId(id=message_id), timeout=self._peers.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error
        return copy_from_pb(reply.message) if reply.found else None

    async def inventory(self, address: str, verify: bool) -> list[tuple[str, Version]]:
        held: list[tuple[str, Version]] = []
        try:
            # Reading every copy with verify=True takes time: no deadline beyond the channel's.
            call = self._peers.stub(address).Inventory(pb.InventoryRequest(verify=verify))
            async for chunk in call:
                held += [(e.id, version_from_pb(e.version)) for e in chunk.entries]
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error
        return held

    async def delete(self, address: str, copies: list[tuple[str, Version]]) -> None:
        entries = [pb.InventoryEntry(id=key, version=version_to_pb(v)) for key, v in copies]
        try:
            await self._peers.stub(address).Delete(
                pb.DeleteRequest(entries=entries), timeout=self._peers.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error


def _failure(error: grpc.aio.AioRpcError) -> MemberUnreachable:
    """A deadline that passed says the member is slow, not that it is gone: the failure
    detector, not one late answer, decides that it is dead."""
    kind = MemberSlow if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED else MemberUnreachable
    return kind(f"{error.code().name}: {error.details()}")
