"""``kayit member remove``: ask the cluster's leader, through any of its nodes, to remove a
member for good."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from kayit.cluster.removal import REMOVAL_TIMEOUT, RemovedMember
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_tool_channel
from kayit.rpc.kayit_pb2_grpc import NodeStub
from kayit.tls.identity import TlsIdentity

# The leader answers within REMOVAL_TIMEOUT; the rest is for reaching it.
_CALL_TIMEOUT = REMOVAL_TIMEOUT + 5.0


class RemovalFailed(Exception):
    """The member was not removed; the text says why."""


def remove_member(
    member: str,
    vias: Sequence[str],
    timeout: float = _CALL_TIMEOUT,
    tls: TlsIdentity | None = None,
) -> RemovedMember:
    """Remove ``member`` (a node's gRPC address, or its node id) from the cluster of the
    nodes at ``vias``: asks each in turn, following its redirect to the leader, until the
    leader answers. Raises RemovalFailed with the leader's refusal, or with why no node
    could be asked."""
    problems: list[str] = []
    for via in vias:
        target = via
        asked: set[str] = set()
        while True:
            if target in asked:
                problems.append(f"{via}: redirected in a circle ({', '.join(sorted(asked))})")
                break
            asked.add(target)
            try:
                reply = _ask(target, member, timeout, tls)
            except ConnectionError as error:
                problems.append(str(error))
                break
            if reply.removed:
                return RemovedMember(reply.node_id, reply.address)
            if reply.refused:
                raise RemovalFailed(reply.error)
            if not reply.leader_address:  # it knows of no leader: another node may
                problems.append(f"{target}: {reply.error}")
                break
            target = reply.leader_address
    raise RemovalFailed("; ".join(problems) or "no node to ask")


def _ask(
    address: str, member: str, timeout: float, tls: TlsIdentity | None
) -> pb.RemoveMemberReply:
    with open_tool_channel(address, tls) as channel:
        try:
            reply: pb.RemoveMemberReply = NodeStub(channel).RemoveMember(
                pb.RemoveMemberRequest(member=member), timeout=timeout
            )
        except grpc.RpcError as error:
            raise ConnectionError(f"no answer from {address}: {error.code().name}") from error
    return reply
