"""``kayit status``: ask a node over gRPC what it is and what it holds."""

from __future__ import annotations

import grpc

from kayit.cluster.leader import MemberCounts
from kayit.report import leader_report, member_report
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_tool_channel
from kayit.rpc.kayit_pb2_grpc import NodeStub
from kayit.storage.store import SyncHealth
from kayit.tls.identity import TlsIdentity


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


def format_status(status: pb.StatusReply) -> str:
    sync = SyncHealth(status.disk_sync_failures, status.disk_sync_error)
    if status.role != "leader":
        return member_report(
            status.address,
            status.message_count,
            status.leader_address,
            sync=sync,
            backlog=status.backlog,
        )
    members = [
        MemberCounts(m.node_id, m.address, m.alive, m.assigned, m.voter) for m in status.members
    ]
    return leader_report(
        status.address,
        status.term,
        status.message_count,
        status.tolerance,
        members,
        sync=sync,
        backlog=status.backlog,
    )
