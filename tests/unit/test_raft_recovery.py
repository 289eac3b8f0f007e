"""RaftNode.force_new_cluster: a survivor of a cluster that lost most of its voters becomes
its only voter and leader, in one step (``kayit recover``)."""

from __future__ import annotations

import random

import pytest

from kayit.consensus import (
    ClusterConfig,
    Entry,
    EntryKind,
    HardState,
    Message,
    PersistedState,
    RaftConfig,
    RaftNode,
    Role,
)
from kayit.consensus.node import AlreadyLeading

OLD_VOTERS = ["n0", "n1", "n2", "n3", "n4"]


def survivor(node_id: str, term: int, entries: list[Entry], commit: int) -> RaftNode:
    """A node of a five-voter cluster, restarted from what it persisted (PreVote on)."""
    persisted = PersistedState(HardState(term, None, commit), tuple(entries))
    return RaftNode(node_id, OLD_VOTERS, random.Random(7), RaftConfig(), persisted)


def command(index: int, term: int, data: bytes) -> Entry:
    return Entry(index, term, data)


def persist(node: RaftNode) -> list[Message]:
    """One Ready, persisted and advanced; returns what it sends."""
    ready = node.ready()
    node.advance(ready)
    return list(ready.messages)


def exchange(nodes: list[RaftNode], rounds: int = 50) -> None:
    """Ready after Ready, delivering every message to its recipient among ``nodes``; those
    to anyone else (the lost nodes) are lost."""
    by_id = {node.id: node for node in nodes}
    for _ in range(rounds):
        sent = [message for node in nodes if node.has_ready() for message in persist(node)]
        for message in sent:
            if message.recipient in by_id:
                by_id[message.recipient].step(message)
        if not sent and not any(node.has_ready() for node in nodes):
            return


def test_the_forced_configuration_takes_effect_and_the_node_leads_alone() -> None:
    base = [Entry(1, 1, kind=EntryKind.NO_OP), command(2, 1, b"a"), command(3, 2, b"b")]
    node = survivor("n0", 3, base, commit=2)

    no_op = node.force_new_cluster(["n1", "n0"], [b"placed", b"removed"], above_term=5)

    # Term 6 (above the survivors' 5) for the step's entries, 7 for the election it won.
    assert (node.role, node.term, node.leader_id, node.voted_for) == (Role.LEADER, 7, "n0", "n0")
    assert node.cluster_config == ClusterConfig(frozenset({"n0"}), frozenset({"n1"}))
    appended = node.log.entries[3:]
    assert [(e.index, e.term, e.kind, e.data) for e in appended] == [
        (4, 6, EntryKind.COMMAND, b"placed"),
        (5, 6, EntryKind.COMMAND, b"removed"),
        (6, 6, EntryKind.CONFIG, ClusterConfig(frozenset({"n0"}), frozenset({"n1"})).encode()),
        (7, 7, EntryKind.NO_OP, b""),
    ]
    assert no_op == 7
    # Nothing commits before it is durable; then all of it does, the old tail included.
    assert node.commit == 2
    ready = node.ready()
    assert ready.hard_state == HardState(7, "n0", 2)
    assert [e.index for e in ready.entries] == [4, 5, 6, 7]
    assert {m.recipient for m in ready.messages} == {"n1"}  # the lost voters hear nothing
    node.advance(ready)
    assert node.commit == 7
    assert [e.index for e in node.ready().committed_entries] == [3, 4, 5, 6, 7]


def test_the_term_is_above_its_own_when_no_survivor_is_ahead() -> None:
    node = survivor("n0", 4, [Entry(1, 4, kind=EntryKind.NO_OP)], commit=1)
    node.force_new_cluster([], [], above_term=2)
    assert [(e.index, e.term) for e in node.log.entries] == [(1, 4), (2, 5), (3, 6)]
    assert node.term == 6 and node.role is Role.LEADER


def test_a_leader_refuses_and_changes_nothing() -> None:
    solo = RaftNode("n0", ["n0"], random.Random(1))
    solo.campaign()
    persist(solo)
    before = (solo.term, solo.log.last_index, solo.cluster_config)
    with pytest.raises(AlreadyLeading):
        solo.force_new_cluster(["n1"], [b"x"])
    assert (solo.term, solo.log.last_index, solo.cluster_config) == before


def test_a_survivor_with_a_higher_term_and_a_conflicting_tail_converges_as_a_learner() -> None:
    # n1 took a higher term in elections it could not win, and holds an entry of term 1 at
    # index 3 that the lost leader never committed; n0's log is the more up to date.
    shared = [Entry(1, 1, kind=EntryKind.NO_OP), command(2, 1, b"a")]
    recovering = survivor("n0", 2, [*shared, command(3, 2, b"b")], commit=2)
    other = survivor("n1", 9, [*shared, command(3, 1, b"lost")], commit=2)

    recovering.force_new_cluster(["n1"], [b"placed"], above_term=9)
    exchange([recovering, other])

    assert recovering.role is Role.LEADER and recovering.term == 11  # not deposed by n1's 9
    assert other.role is Role.FOLLOWER and other.leader_id == "n0" and other.term == 11
    assert other.log.entries == recovering.log.entries
    assert other.cluster_config == ClusterConfig(frozenset({"n0"}), frozenset({"n1"}))
    assert other.commit == recovering.commit == recovering.log.last_index
    # A learner never campaigns, however long it hears nothing.
    for _ in range(100):
        other.tick()
    assert other.role is Role.FOLLOWER


def test_after_a_restart_the_only_voter_elects_itself_again() -> None:
    node = survivor("n0", 1, [Entry(1, 1, kind=EntryKind.NO_OP)], commit=1)
    node.force_new_cluster(["n1"], [])
    ready = node.ready()
    node.advance(ready)
    assert ready.hard_state is not None
    persisted = PersistedState(
        HardState(node.term, node.voted_for, node.commit), tuple(node.log.entries)
    )
    restarted = RaftNode("n0", OLD_VOTERS, random.Random(3), RaftConfig(), persisted)
    assert restarted.cluster_config.voters == {"n0"}
    restarted.campaign()
    assert restarted.role is Role.LEADER and restarted.term == node.term + 1
