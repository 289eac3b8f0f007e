"""``/cluster.json``: the cluster as the dashboard shows it, gathered as ``kayit status``
gathers it (each node's Status RPC, the leader's list of members), with this node's last
minutes of client commands (``CommandHistory``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import grpc

from kayit.metrics.history import CommandHistory
from kayit.metrics.state import NodeState
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.peers import Peers

_ASK_TIMEOUT = 1.0  # per node: a node that does not answer within it is shown unreachable
UNREACHABLE = "unreachable"


def dashboard_page() -> bytes:
    """The page, HTML with its script and style inline: nothing else to fetch."""
    return resources.files("kayit.metrics").joinpath("dashboard.html").read_bytes()


class ClusterView:
    def __init__(
        self,
        own_status: Callable[[], pb.StatusReply | None],
        own_state: Callable[[], NodeState | None],
        peers: Peers,
        history: CommandHistory,
    ) -> None:
        self._own_status = own_status
        self._own_state = own_state
        self._peers = peers
        self._history = history

    async def json(self) -> bytes | None:
        own = self._own_status()
        state = self._own_state()
        if own is None or state is None:
            return None
        leader = own if own.role == "leader" else None
        if leader is None and own.leader_address:
            leader = await self._ask(own.leader_address)
            if leader is not None and leader.role != "leader":
                leader = None
        members = {m.address: m for m in leader.members} if leader is not None else {}
        # The leader first, then the others by address.
        known = {own.address: own}
        if leader is not None:
            known[leader.address] = leader
        others = sorted(a for a in members if a not in known)
        asked = await asyncio.gather(*(self._ask(address) for address in others))
        statuses = {**known, **dict(zip(others, asked, strict=True))}
        first = [leader.address] if leader is not None else []
        addresses = [*first, *sorted(a for a in statuses if a not in first)]
        view: dict[str, Any] = {
            "node": own.address,
            "time": time.time(),
            "leader": leader.address if leader is not None else None,
            "term": (leader or own).term,
            "tolerance": (leader or own).tolerance,
            "messages": leader.message_count if leader is not None else None,
            # The leader's word, as kayit status shows it: unknown without a leader.
            "under_replicated": leader.under_replicated if leader is not None else None,
            "repair": (
                {
                    "messages": state.leader.repair_pass_messages,
                    "repaired": state.leader.repair_pass_repaired,
                }
                if state.leader
                else None
            ),
            "nodes": [
                _node(address, statuses[address], members.get(address), leader)
                for address in addresses
            ],
            "history": self._history.samples(),
        }
        return json.dumps(view, separators=(",", ":")).encode()

    async def _ask(self, address: str) -> pb.StatusReply | None:
        try:
            reply: pb.StatusReply = await self._peers.stub(address).Status(
                pb.StatusRequest(), timeout=_ASK_TIMEOUT
            )
        except grpc.aio.AioRpcError:
            return None
        return reply


def _node(
    address: str,
    status: pb.StatusReply | None,
    member: pb.MemberStatus | None,
    leader: pb.StatusReply | None,
) -> dict[str, Any]:
    is_leader = leader is not None and address == leader.address
    # Whether a node is alive is the leader's word; with no leader known nobody says.
    alive = True if is_leader else member.alive if member is not None else None
    return {
        "address": address,
        "node_id": status.node_id if status is not None else (member.node_id if member else ""),
        "role": status.role if status is not None else UNREACHABLE,
        "alive": alive,
        "voter": True if is_leader else (member.voter if member is not None else None),
        "messages": status.message_count if status is not None else None,
        "assigned": member.assigned if member is not None else None,
        "term": status.term if status is not None else None,
    }
