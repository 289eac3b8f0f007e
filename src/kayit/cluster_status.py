"""What ``kayit status`` shows: every node of the cluster, as its leader places them and as
each says of itself, and whether the cluster is healthy (every node alive, every message on
TOLERANCE + 1 nodes, every disk syncing) or degraded, with why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kayit.rpc import kayit_pb2 as pb

HEALTHY = "healthy"
DEGRADED = "degraded"
_COLUMNS = ("ROLE", "NODE", "ADDRESS", "TERM", "ALIVE", "VOTER", "MESSAGES", "ASSIGNED", "BACKLOG")


@dataclass(frozen=True, slots=True)
class NodeRow:
    role: str  # leader, member or joining, as the node says (the leader's view if it is silent)
    node_id: str
    address: str  # gRPC
    alive: bool  # as the leader sees it
    voter: bool | None  # None: not known (no leader to say)
    term: int | None  # None: the node did not answer the tool
    messages: int | None  # the leader: in its index; the others: on their own disk
    assigned: int | None  # copies the leader's index places on it; None for the leader
    backlog: int | None  # its copies not in their .msg files yet; None: it did not answer
    backlog_bound: int | None  # how many the backlog may hold (~2 s of its disk's writes)


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    asked: str  # the address of the node asked
    leader: str | None  # None: no leader known, or it does not answer
    term: int
    tolerance: int
    messages: int | None  # in the leader's index
    under_replicated: int | None
    nodes: tuple[NodeRow, ...]
    problems: tuple[str, ...]  # empty: healthy

    @property
    def health(self) -> str:
        return DEGRADED if self.problems else HEALTHY

    def as_json(self) -> dict[str, Any]:
        return {
            "health": self.health,
            "problems": list(self.problems),
            "asked": self.asked,
            "leader": self.leader,
            "term": self.term,
            "tolerance": self.tolerance,
            "messages": self.messages,
            "under_replicated": self.under_replicated,
            "nodes": [asdict(row) for row in self.nodes],
        }

    def table(self) -> str:
        rows = [_COLUMNS, *(_cells(row) for row in self.nodes)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        lines = [self._headline()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                  for row in rows]  # fmt: skip
        lines += [f"{DEGRADED}: {problem}" for problem in self.problems]
        return "\n".join(lines)

    def _headline(self) -> str:
        if self.leader is None:
            return f"{self.asked}: {self.health}, no leader"
        others = [row for row in self.nodes if row.role != "leader"]
        alive = sum(row.alive for row in others)
        return (
            f"leader {self.leader} (term {self.term}): {self.messages} messages, "
            f"TOLERANCE={self.tolerance}, {alive} of {len(others)} other nodes alive, "
            f"{self.under_replicated} under-replicated: {self.health}"
        )


def cluster_status(
    asked: pb.StatusReply,
    leader: pb.StatusReply | None,
    others: Mapping[str, pb.StatusReply],
) -> ClusterStatus:
    """``asked``: the reply of the node the tool was pointed at; ``leader``: the leader's
    (None if none is known or it did not answer); ``others``: the replies of the other nodes
    that answered, by gRPC address."""
    if leader is None:
        why = (
            f"the leader {asked.leader_address} does not answer"
            if asked.leader_address
            else f"{asked.address} knows of no leader"
        )
        return ClusterStatus(
            asked=asked.address,
            leader=None,
            term=asked.term,
            tolerance=asked.tolerance,
            messages=None,
            under_replicated=None,
            nodes=(_own_row(asked),),
            problems=(why, *_sync_problems([asked])),
        )
    rows = [_own_row(leader)]
    problems: list[str] = []
    for member in leader.members:
        own = others.get(member.address)
        rows.append(
            NodeRow(
                role=own.role if own else "member",
                node_id=member.node_id,
                address=member.address,
                alive=member.alive,
                voter=member.voter,
                term=own.term if own else None,
                messages=own.message_count if own else None,
                assigned=member.assigned,
                backlog=own.backlog if own else None,
                backlog_bound=own.backlog_bound if own else None,
            )
        )
        if not member.alive:
            problems.append(f"node {member.node_id} at {member.address} is dead")
    holders = 1 + sum(m.alive for m in leader.members)
    if holders < leader.tolerance + 1:
        problems.append(
            f"{holders} live nodes cannot hold the {leader.tolerance + 1} copies "
            f"TOLERANCE={leader.tolerance} asks for: every SET is refused"
        )
    if leader.under_replicated:
        problems.append(f"{leader.under_replicated} messages have fewer copies than they need")
    problems += _sync_problems([leader, *others.values()])
    return ClusterStatus(
        asked=asked.address,
        leader=leader.address,
        term=leader.term,
        tolerance=leader.tolerance,
        messages=leader.message_count,
        under_replicated=leader.under_replicated,
        nodes=tuple(rows),
        problems=tuple(problems),
    )


def _own_row(reply: pb.StatusReply) -> NodeRow:
    return NodeRow(
        role=reply.role,
        node_id=reply.node_id,
        address=reply.address,
        alive=True,
        voter=True if reply.role == "leader" else None,
        term=reply.term,
        messages=reply.message_count,
        assigned=None,
        backlog=reply.backlog,
        backlog_bound=reply.backlog_bound,
    )


def _sync_problems(replies: list[pb.StatusReply]) -> list[str]:
    """A line per node whose last disk sync failed: what it stored since its last good sync
    is not on stable storage."""
    return [
        f"node {r.node_id} at {r.address}: disk sync FAILING: {r.disk_sync_error} "
        f"({r.disk_sync_failures} failed syncs since start)"
        for r in replies
        if r.disk_sync_error
    ]


def _cells(row: NodeRow) -> tuple[str, ...]:
    def shown(value: int | None) -> str:
        return "-" if value is None else str(value)

    return (
        row.role,
        row.node_id,
        row.address,
        shown(row.term),
        "yes" if row.alive else "DEAD",
        "-" if row.voter is None else "voter" if row.voter else "learner",
        shown(row.messages),
        shown(row.assigned),
        shown(row.backlog),
    )
