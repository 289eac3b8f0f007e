"""``kayit recover`` over gRPC: the tool, which picks the survivor to rebuild the cluster
around and asks it to (``recover_cluster``), and that survivor's questions to the others
(``ask_state``). The recovery itself is ``kayit.cluster.recovery``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from kayit.cluster.recovery import PendingCopy, SurvivorState
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_tool_channel
from kayit.rpc.convert import version_from_pb, version_to_pb
from kayit.rpc.kayit_pb2_grpc import NodeStub
from kayit.rpc.peers import Peers
from kayit.rpc.status import fetch_status
from kayit.tls.identity import TlsIdentity

# A survivor reads every pending copy to checksum it; the recovering node asks them all, then
# commits, and waits until it has applied what it committed.
STATE_TIMEOUT = 30.0
_RECOVER_TIMEOUT = STATE_TIMEOUT + 30.0


class RecoveryFailed(Exception):
    """Nothing was recovered; the text says why."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    leader_id: str
    leader_address: str
    term: int
    adopted: int
    removed: tuple[str, ...]
    message_count: int


def recover_cluster(addresses: Sequence[str], tls: TlsIdentity | None = None) -> RecoveryReport:
    """Rebuild the cluster around the surviving nodes at ``addresses`` (gRPC host:port).
    Every one of them must answer, and none may know of a leader. Asks the survivor whose
    Raft log is the most up to date to recover; should it lack entries another one committed,
    the next one. Raises RecoveryFailed."""
    statuses: list[tuple[str, pb.StatusReply]] = []
    for address in dict.fromkeys(addresses):
        try:
            status = fetch_status(address, tls=tls)
        except ConnectionError as error:
            raise RecoveryFailed(
                f"{error}: name only nodes that run (every one that survived)"
            ) from error
        if status.role == "joining":
            raise RecoveryFailed(f"{address} is not a member of a cluster yet")
        if status.role == "leader" or status.leader_address:
            leader = status.address if status.role == "leader" else status.leader_address
            raise RecoveryFailed(
                f"{address} knows of a leader ({leader}): the cluster can still elect "
                "leaders, and recover is only for one that cannot"
            )
        statuses.append((address, status))
    survivors = {status.node_id: status.address for _, status in statuses}
    if len(survivors) < len(statuses):
        raise RecoveryFailed("two of the addresses are the same node")
    # Raft's measure: the later last term, then the longer log (§5.4.1).
    ranked = sorted(
        statuses, key=lambda pair: (pair[1].last_log_term, pair[1].last_log_index), reverse=True
    )
    problems = []
    for address, _ in ranked:
        reply = _ask_to_recover(address, survivors, tls)
        if reply.recovered:
            return RecoveryReport(
                reply.leader_id,
                reply.leader_address,
                reply.term,
                reply.adopted,
                tuple(reply.removed),
                reply.message_count,
            )
        if not reply.log_incomplete:
            raise RecoveryFailed(f"{address}: {reply.error}")
        problems.append(f"{address}: {reply.error}")
    raise RecoveryFailed("; ".join(problems))


def _ask_to_recover(
    address: str, survivors: dict[str, str], tls: TlsIdentity | None
) -> pb.RecoverReply:
    with open_tool_channel(address, tls) as channel:
        try:
            reply: pb.RecoverReply = NodeStub(channel).Recover(
                pb.RecoverRequest(survivors=survivors), timeout=_RECOVER_TIMEOUT
            )
        except grpc.RpcError as error:
            raise RecoveryFailed(f"no answer from {address}: {error.code().name}") from error
    return reply


async def ask_state(peers: Peers, address: str) -> SurvivorState:
    """The state of the survivor at ``address`` (raises grpc.aio.AioRpcError)."""
    reply = await peers.stub(address).RecoveryState(
        pb.RecoveryStateRequest(), timeout=STATE_TIMEOUT
    )
    return state_from_pb(reply)


def state_to_pb(state: SurvivorState) -> pb.RecoveryStateReply:
    commit_index, commit_term = state.commit_point
    return pb.RecoveryStateReply(
        node_id=state.node_id,
        term=state.term,
        leader_id=state.leader_id or "",
        commit_index=commit_index,
        commit_term=commit_term,
        pending=[
            pb.PendingCopy(
                id=copy.message_id, version=version_to_pb(copy.version), checksum=copy.checksum
            )
            for copy in state.pending
        ],
    )


def state_from_pb(reply: pb.RecoveryStateReply) -> SurvivorState:
    return SurvivorState(
        node_id=reply.node_id,
        term=reply.term,
        leader_id=reply.leader_id or None,
        commit_point=(reply.commit_index, reply.commit_term),
        pending=tuple(
            PendingCopy(copy.id, version_from_pb(copy.version), copy.checksum)
            for copy in reply.pending
        ),
    )
