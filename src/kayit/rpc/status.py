"""``kayit status``: ask nodes over gRPC what they are and what they hold."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc

from kayit.cluster_status import ClusterStatus, cluster_status
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_tool_channel
from kayit.rpc.kayit_pb2_grpc import NodeStub
from kayit.tls.identity import TlsIdentity

_ASKED_AT_ONCE = 8


def fetch_status(
    address: str, timeout: float = 5.0, tls: TlsIdentity | None = None
) -> pb.StatusReply:
    with open_tool_channel(address, tls) as channel:
        try:
            reply: pb.StatusReply = NodeStub(channel).Status(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError as error:
            hint = ""
            if tls is None and error.code() is grpc.StatusCode.UNAVAILABLE:
                hint = " (a node that speaks TLS needs --tls-dir, or the --data-dir of its cluster)"
            raise ConnectionError(f"no answer from {address}: {error.code().name}{hint}") from error
    return reply


def fetch_cluster(
    address: str, timeout: float = 5.0, tls: TlsIdentity | None = None
) -> ClusterStatus:
    """The whole cluster, through the node at ``address``: its leader's view, and what each
    other node says of itself. Raises ConnectionError if the node at ``address`` does not
    answer; nodes after it that do not are shown as such."""
    asked = fetch_status(address, timeout, tls)
    leader: pb.StatusReply | None = asked if asked.role == "leader" else None
    if leader is None and asked.leader_address:
        try:
            leader = fetch_status(asked.leader_address, timeout, tls)
        except ConnectionError:
            leader = None
        if leader is not None and leader.role != "leader":
            leader = None  # leadership moved on between the two calls
    others: dict[str, pb.StatusReply] = {}
    if leader is not None:
        wanted = [m.address for m in leader.members if m.address != asked.address]
        if asked is not leader:
            others[asked.address] = asked

        def ask(member: str) -> pb.StatusReply | None:
            try:
                return fetch_status(member, timeout, tls)
            except ConnectionError:
                return None

        with ThreadPoolExecutor(max_workers=_ASKED_AT_ONCE) as pool:
            for member, reply in zip(wanted, pool.map(ask, wanted), strict=True):
                if reply is not None:
                    others[member] = reply
    return cluster_status(asked, leader, others)
