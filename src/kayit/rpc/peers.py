"""gRPC clients: the leader's MemberTransport, and a member's link to its leader."""

from __future__ import annotations

import grpc

from kayit.cluster.transport import Copy, MemberUnreachable
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_channel
from kayit.rpc.convert import copy_from_pb, copy_to_pb
from kayit.rpc.kayit_pb2_grpc import NodeStub


class Peers:
    """One channel per peer address, opened on first use and kept."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._stubs: dict[str, NodeStub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def stub(self, address: str) -> NodeStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = open_channel(address)
            self._channels.append(channel)
            stub = self._stubs[address] = NodeStub(channel)
        return stub

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class GrpcMemberTransport:
    """MemberTransport over gRPC: StoreMany and Retrieve."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    async def store_many(self, address: str, copies: list[Copy]) -> None:
        request = pb.StoreBatch(messages=[copy_to_pb(copy) for copy in copies])
        try:
            reply = await self._peers.stub(address).StoreMany(request, timeout=self._peers.timeout)
        except grpc.aio.AioRpcError as error:
            raise MemberUnreachable(_describe(error)) from error
        if len(reply.results) != len(copies):
            raise MemberUnreachable(f"answered {len(reply.results)} of {len(copies)} copies")

    async def retrieve(self, address: str, message_id: str) -> Copy | None:
        try:
            reply = await self._peers.stub(address).Retrieve(
                pb.MessageId(id=message_id), timeout=self._peers.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise MemberUnreachable(_describe(error)) from error
        return copy_from_pb(reply.message) if reply.found else None


def _describe(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details()}"
