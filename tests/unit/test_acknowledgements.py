"""A Leader acknowledges only what happened, on three real nodes in one process
(tests/unit/leader_cluster.py): a holder that refuses a copy (it holds a newer version) is
not counted as holding it, an index entry that did not commit is never answered as a success,
and every version a SET commits is of the term of the leader that commits it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kayit.cluster.leader import ClusterError
from kayit.cluster.membership import Membership
from kayit.cluster.metadata_group import NotLeading
from kayit.metadata.commands import PlacedItem
from kayit.protocol.errors import ErrorCode
from kayit.storage.journal import checksum
from kayit.version import Version
from tests.unit.leader_cluster import ClusterNode, LeaderCluster, run
from tests.waiting import eventually

NEVER_DEAD = 3600.0  # a Membership the test alone feeds: alive is whom it says


def others(cluster: LeaderCluster, node: ClusterNode) -> list[ClusterNode]:
    return sorted((n for n in cluster.nodes.values() if n is not node), key=lambda n: n.name)


def test_a_member_holding_a_newer_version_is_not_counted_as_a_copy(tmp_path: Path) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        node = await cluster.three_nodes(tolerance=1)
        newer, spare = others(cluster, node)
        membership = Membership(NEVER_DEAD)
        membership.heard_from(newer.id)
        leader = node.leader(membership)
        await leader.ready()
        # ``newer`` holds a committed copy of a later version than this leader can write: it
        # answers the SET's copy with stored=False.
        later = Version(leader.term + 1, 1)
        assert (await newer.store.put("a", b"later", later)).stored

        with pytest.raises(ClusterError, match="stored on 1 of 2") as refused:
            await leader.set("a", b"x")
        assert refused.value.code is ErrorCode.NOREPLICAS
        assert leader.metadata.entry("a") is None
        assert newer.store.version("a") == later

        # With a live node to take its place, the SET is placed there instead.
        membership.heard_from(spare.id)
        await leader.set("a", b"y")
        entry = leader.metadata.entry("a")
        assert entry is not None and set(entry.holders) == {node.id, spare.id}
        assert await leader.get("a") == b"y"

    run(tmp_path, scenario)


def test_the_leaders_own_disk_holding_a_newer_version_is_not_counted(tmp_path: Path) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        node, leader = await cluster.leading()
        assert (await node.store.put("a", b"later", Version(leader.term + 1, 1))).stored

        await leader.set("a", b"x")
        entry = leader.metadata.entry("a")
        assert entry is not None
        assert set(entry.holders) == {n.id for n in others(cluster, node)}
        assert await leader.get("a") == b"x"

    run(tmp_path, scenario)


def test_a_set_whose_entry_did_not_commit_is_not_answered_ok(tmp_path: Path) -> None:
    """Cut off, the leader still stores the SET's copies (its calls go out) and appends its
    index entry, but hears no follower acknowledge it, and steps down (check-quorum): the
    SET's outcome is unknown (TIMEOUT), never OK. (On a loaded machine it may step down
    before it proposed the entry, or a copy may miss its deadline: the SET then fails with
    an error that says nothing was done, and the next leader must not have it.)"""

    async def scenario(cluster: LeaderCluster) -> None:
        node, leader = await cluster.leading()
        await leader.set("before", b"committed")
        await node.unplug()  # it still sends; no answer reaches it
        with pytest.raises(ClusterError) as failed:
            await leader.set("a", b"x")
        outcome = failed.value.code
        assert outcome in (ErrorCode.TIMEOUT, ErrorCode.NOLEADER, ErrorCode.NOREPLICAS)
        await eventually(lambda: not node.group.is_leader, 5.0, "the cut-off leader to step down")
        await node.plug_in()
        # An election after check-quorum: on a loaded machine it takes longer than usual.
        new = await cluster.leading_node(
            among=[n.name for n in others(cluster, node)], timeout=15.0
        )
        successor = new.leader()
        await successor.ready()
        assert await successor.get("before") == b"committed"
        committed = successor.metadata.entry("a")
        if outcome is ErrorCode.TIMEOUT:
            # The followers may have the entry: the next leader may still commit it, in
            # the version the old leader gave it.
            assert committed is None or committed.version.term == leader.term
        else:
            assert committed is None

    run(tmp_path, scenario)


def test_versions_are_of_the_term_that_commits_them_only(tmp_path: Path) -> None:
    """A node that loses leadership and wins it back leads in a new term: the Leader of its
    old term commits nothing more, and the new one writes versions of the new term."""

    async def scenario(cluster: LeaderCluster) -> None:
        node, old = await cluster.leading()
        await old.set("a", b"first")
        first = old.metadata.entry("a")
        assert first is not None and first.version.term == old.term

        await lead_again(cluster, node)
        assert node.group.term > old.term

        with pytest.raises(ClusterError) as stale:
            await old.set("a", b"from the old term")
        assert stale.value.code is ErrorCode.NOLEADER
        # Below the Leader too, the group refuses an entry for an earlier term.
        item = PlacedItem("a", Version(old.term, 99), checksum(b"z"), (node.id,))
        with pytest.raises(NotLeading):
            await node.group.propose_placed([item], old.term)
        assert node.group.metadata.entry("a") == first

        new = node.leader()
        await new.ready()
        await new.set("a", b"second")
        second = new.metadata.entry("a")
        assert second is not None and second.version.term == new.term == node.group.term
        assert await new.get("a") == b"second"

    run(tmp_path, scenario)


async def lead_again(cluster: LeaderCluster, node: ClusterNode) -> None:
    """``node``, which leads, hands leadership over and gets it back in a later term. One
    other node is stopped first, so that once it counts as dead each hand-over has a single
    live voter to go to (two of three voters still make a quorum)."""
    other, gone = others(cluster, node)
    await cluster.stop(gone.name)
    for giver, taker in ((node, other), (other, node)):
        for _ in range(10):  # a hand-over to the stopped node, while it seems alive, fails
            if await giver.group.hand_over(1.0) == taker.id:
                break
        await cluster.leading_node()
    assert node.group.is_leader
