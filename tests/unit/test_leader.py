"""The Leader on three real nodes in one process (tests/unit/leader_cluster.py): copies placed
by node id and promoted by every holder once their Placed entry applies, overwrites, refusals,
lost copies healed, and a new leader that serves what the old one acknowledged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kayit.cluster.leader import ClusterError, Leader
from kayit.cluster.membership import Membership
from kayit.metadata.index import IndexEntry
from kayit.protocol.errors import ErrorCode
from kayit.storage.naming import file_name
from tests.unit.leader_cluster import ClusterNode, LeaderCluster, run
from tests.waiting import eventually

NEVER_DEAD = 3600.0  # a Membership the test alone feeds: alive is whom it says


def promoted(cluster: LeaderCluster, message_id: str, entry: IndexEntry) -> bool:
    """Every holder of ``entry`` holds its version as its committed copy."""
    return all(
        cluster.by_id(holder).store.version(message_id) == entry.version for holder in entry.holders
    )


def test_a_set_is_stored_on_the_leader_and_one_other_node_and_promoted_by_both(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        _, leader = await cluster.leading()

        await leader.set("a", b"one")
        assert await leader.get("a") == b"one"
        assert await leader.get("never") is None
        entry = leader.metadata.entry("a")
        assert entry is not None and entry.version.term == leader.term
        assert len(entry.holders) == 2 and leader.id in entry.holders

        await eventually(lambda: promoted(cluster, "a", entry), 5.0, "both holders to promote")
        await eventually(
            lambda: all(n.group.metadata.entry("a") == entry for n in cluster.nodes.values()),
            5.0,
            "every node to apply the entry",
        )
        for member in cluster.nodes.values():
            committed = await member.committed()
            assert await member.pending_copies() == []
            if member.id in entry.holders:
                assert committed == {"a": entry.version}
                assert await member.store.get_version("a", entry.version) == b"one"
            else:
                assert committed == {}

    run(tmp_path, scenario)


def test_an_overwrite_supersedes_and_reconcile_deletes_the_copy_it_left_behind(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        node = await cluster.three_nodes(tolerance=1)
        first, second = (n for n in cluster.nodes.values() if n is not node)
        membership = Membership(NEVER_DEAD)
        membership.heard_from(first.id)
        leader = node.leader(membership)
        await leader.ready()

        await leader.set("a", b"old")
        old = leader.metadata.entry("a")
        assert old is not None and set(old.holders) == {node.id, first.id}
        await eventually(lambda: promoted(cluster, "a", old), 5.0, "the old copies promoted")

        # ``first`` failed meanwhile: the overwrite goes to the leader and ``second``.
        membership.mark_failed(first.id)
        membership.heard_from(second.id)
        await leader.set("a", b"new")
        assert await leader.get("a") == b"new"
        new = leader.metadata.entry("a")
        assert new is not None and set(new.holders) == {node.id, second.id}
        assert new.version > old.version
        await eventually(lambda: promoted(cluster, "a", new), 5.0, "the new copies promoted")

        # ``first`` still holds the old version, which the metadata now lets go.
        assert await first.committed() == {"a": old.version}
        assert await leader.reconcile(first.id) == 1
        assert await first.committed() == {}
        for holder in (node, second):
            assert await leader.reconcile(holder.id) == 0
            assert await holder.committed() == {"a": new.version}
        assert leader.metadata.entry("a") == new
        assert await leader.get("a") == b"new"

    run(tmp_path, scenario)


def test_a_set_without_tolerance_plus_one_live_nodes_is_refused_and_commits_nothing(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        node = await cluster.three_nodes(tolerance=1)
        membership = Membership(NEVER_DEAD)  # heard from no other node yet
        leader = node.leader(membership)
        await leader.ready()

        with pytest.raises(ClusterError, match="only 1 live nodes") as alone:
            await leader.set("a", b"x")
        assert alone.value.code is ErrorCode.NOREPLICAS
        assert await node.pending_copies() == []  # refused before anything was stored

        # One other node was heard from, and is gone: its copy fails, and no live node is
        # left to take its place. Two of three nodes still make a quorum.
        gone = next(n for n in cluster.nodes.values() if n is not node)
        membership.heard_from(gone.id)
        await cluster.stop(gone.name)
        with pytest.raises(ClusterError, match="stored on 1 of 2") as short:
            await leader.set("a", b"y")
        assert short.value.code is ErrorCode.NOREPLICAS
        assert not membership.is_alive(gone.id)

        assert await leader.get("a") is None
        assert leader.metadata.entry("a") is None
        assert leader.metadata.message_count == 0
        for member in cluster.nodes.values():
            assert member.group.metadata.entry("a") is None
            assert await member.committed() == {}
        # The leader's own copy stays pending: its version never committed.
        assert [key for key, _ in await node.pending_copies()] == ["a"]

    run(tmp_path, scenario)


def test_a_lost_copy_is_read_elsewhere_dropped_from_the_index_and_repaired(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        node, leader = await cluster.leading()
        await leader.set("a", b"kept")
        entry = leader.metadata.entry("a")
        assert entry is not None
        other = next(holder for holder in entry.holders if holder != node.id)
        await eventually(lambda: promoted(cluster, "a", entry), 5.0, "both holders to promote")

        # The leader, asked first, has lost its file: the other holder answers.
        (node.root / "messages" / file_name("a")).unlink()
        assert await leader.get("a") == b"kept"
        assert leader.metadata.entry("a") == IndexEntry(entry.version, entry.checksum, (other,))
        assert leader.under_replicated == {"a"}

        assert await leader.repair("a")
        repaired = await held_on_two_live_nodes(cluster, leader, "a", entry, b"kept")
        assert other in repaired.holders  # the copy it still had counts

        # A member that lost its file is found out by reconciliation, and repaired alike.
        (cluster.by_id(other).root / "messages" / file_name("a")).unlink()
        assert await leader.reconcile(other) == 0
        dropped = leader.metadata.entry("a")
        assert dropped is not None and dropped.holders == (leader.id,)
        assert await leader.repair("a")
        await held_on_two_live_nodes(cluster, leader, "a", entry, b"kept")
        assert await leader.get("a") == b"kept"

    run(tmp_path, scenario)


async def held_on_two_live_nodes(
    cluster: LeaderCluster, leader: Leader, message_id: str, entry: IndexEntry, message: bytes
) -> IndexEntry:
    """The index places ``entry``'s version on TOLERANCE + 1 = 2 live nodes, and each holds
    it as its committed copy; returns the index entry now."""
    now = leader.metadata.entry(message_id)
    assert now is not None
    assert (now.version, now.checksum) == (entry.version, entry.checksum)
    assert len(now.holders) == 2
    for holder in now.holders:
        assert holder == leader.id or leader.membership.is_alive(holder)
        member = cluster.by_id(holder)
        assert member.store.version(message_id) == entry.version
        assert await member.store.get_version(message_id, entry.version) == message
    return now


def test_a_new_leader_reads_every_acknowledged_value_and_writes_in_its_own_term(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        old, leader = await cluster.leading()
        values = {f"k{n}": f"v{n}".encode() for n in range(6)}
        for key, value in values.items():
            await leader.set(key, value)
        before = {key: leader.metadata.entry(key) for key in values}

        await cluster.stop(old.name)
        new = await cluster.leading_node()
        successor = new.leader()
        await successor.ready()
        assert successor.term == new.group.term > leader.term

        # Some ids were held by the old leader and the third node only: read over gRPC.
        assert any(e is not None and new.id not in e.holders for e in before.values())
        for key, value in values.items():
            assert await successor.get(key) == value
            assert successor.metadata.entry(key) == before[key]

        await successor.set("k0", b"after")
        await successor.set("fresh", b"f")
        assert await successor.get("k0") == b"after"
        assert await successor.get("fresh") == b"f"
        live = {n.id for n in cluster.nodes.values()}
        for key in ("k0", "fresh"):
            entry = successor.metadata.entry(key)
            assert entry is not None and entry.version.term == successor.term
            assert set(entry.holders) == live

    run(tmp_path, scenario)


async def deposed(cluster: LeaderCluster) -> tuple[Leader, ClusterNode]:
    """A Leader that stored "a" while its node led, and the node that leads now: the old
    leader was cut off, stepped down while the other two elected one of them, and follows the
    new leader since it was reachable again."""
    old, leader = await cluster.leading()
    await leader.set("a", b"before")
    await old.unplug()
    new = await cluster.leading_node(among=[name for name in cluster.nodes if name != old.name])
    await old.plug_in()
    await eventually(
        lambda: (
            old.group.leader_id == new.id and old.group.metadata.last_leader_term == new.group.term
        ),
        5.0,
        "the old leader to follow the new one",
    )
    return leader, new


def test_a_leader_whose_group_no_longer_leads_answers_noleader_to_a_get(tmp_path: Path) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        leader, _ = await deposed(cluster)
        with pytest.raises(ClusterError) as refused:
            await leader.get("a")
        assert refused.value.code is ErrorCode.NOLEADER

    run(tmp_path, scenario)


def test_a_leader_whose_group_no_longer_leads_answers_noleader_to_a_set(tmp_path: Path) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        leader, new = await deposed(cluster)
        before = new.group.metadata.entry("a")
        with pytest.raises(ClusterError) as refused:
            await leader.set("a", b"after")
        assert new.group.metadata.entry("a") == before
        assert refused.value.code is ErrorCode.NOLEADER

    run(tmp_path, scenario)


def test_a_delete_commits_a_tombstone_that_goes_once_its_holders_let_go(tmp_path: Path) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        _, leader = await cluster.leading()
        await leader.set("a", b"one")
        entry = leader.metadata.entry("a")
        assert entry is not None
        await eventually(lambda: promoted(cluster, "a", entry), 5.0, "both holders to promote")

        # Two DELs of one id at once: one finds it set, the other finds it gone.
        assert sorted(await asyncio.gather(leader.delete("a"), leader.delete("a"))) == [
            False,
            True,
        ]
        assert await leader.get("a") is None and not await leader.exists("a")
        assert await leader.delete("a") is False
        for holder in entry.holders:
            assert await cluster.by_id(holder).committed() == {}
        assert leader.metadata.tombstone_count == 0  # every holder let go at once

        await leader.set("a", b"two")  # a later SET works as for a new id
        assert await leader.get("a") == b"two"

    run(tmp_path, scenario)
