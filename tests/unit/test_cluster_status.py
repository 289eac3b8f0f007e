"""What kayit status makes of the nodes' Status replies: rows, and why it is degraded."""

from __future__ import annotations

from typing import Any

from kayit.cluster_status import cluster_status
from kayit.rpc import kayit_pb2 as pb


def leader(*members: pb.MemberStatus, tolerance: int = 1, **fields: Any) -> pb.StatusReply:
    return pb.StatusReply(
        role="leader", address="h:1", node_id="L", term=4, tolerance=tolerance,
        message_count=10, members=members, **fields,
    )  # fmt: skip


def member(port: int, alive: bool = True) -> pb.MemberStatus:
    return pb.MemberStatus(
        address=f"h:{port}", node_id=f"M{port}", alive=alive, assigned=5, voter=True
    )


def own(port: int, leader_address: str = "h:1", **fields: Any) -> pb.StatusReply:
    return pb.StatusReply(
        role="member", address=f"h:{port}", node_id=f"M{port}", term=4, message_count=5,
        leader_address=leader_address, **fields,
    )  # fmt: skip


def test_healthy_table() -> None:
    reply = leader(member(2), member(3))
    shown = cluster_status(
        reply, reply, {"h:2": own(2), "h:3": own(3, backlog=2, backlog_bound=4_000)}
    )
    assert shown.problems == ()
    assert shown.as_json()["nodes"][2]["backlog_bound"] == 4_000
    assert shown.table().splitlines() == [
        "leader h:1 (term 4): 10 messages, TOLERANCE=1, 2 of 2 other nodes alive, "
        "0 under-replicated: healthy",
        "ROLE    NODE  ADDRESS  TERM  ALIVE  VOTER  MESSAGES  ASSIGNED  BACKLOG",
        "leader  L     h:1      4     yes    voter  10        -         0",
        "member  M2    h:2      4     yes    voter  5         5         0",
        "member  M3    h:3      4     yes    voter  5         5         2",
    ]


def test_every_reason_to_be_degraded_is_said() -> None:
    reply = leader(member(2, alive=False), tolerance=1, under_replicated=7)
    failing = own(3, disk_sync_error="EIO", disk_sync_failures=2)
    shown = cluster_status(failing, reply, {"h:3": failing})
    assert shown.health == "degraded"
    assert shown.problems == (
        "node M2 at h:2 is dead",
        "1 live nodes cannot hold the 2 copies TOLERANCE=1 asks for: every SET is refused",
        "7 messages have fewer copies than they need",
        "node M3 at h:3: disk sync FAILING: EIO (2 failed syncs since start)",
    )
    dead = shown.as_json()["nodes"][1]
    assert (dead["alive"], dead["term"], dead["messages"], dead["assigned"], dead["backlog"]) == (
        False,
        None,
        None,
        5,
        None,
    )
    assert dead["backlog_bound"] is None


def test_without_a_leader_the_node_asked_alone() -> None:
    asked = own(3, leader_address="")
    shown = cluster_status(asked, None, {})
    assert shown.problems == ("h:3 knows of no leader",)
    assert shown.table().splitlines()[0] == "h:3: degraded, no leader"
    assert [row.address for row in shown.nodes] == ["h:3"]
    gone = cluster_status(own(3), None, {})
    assert gone.problems == ("the leader h:1 does not answer",)
