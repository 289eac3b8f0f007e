"""kayit recover on the node the survivors are rebuilt around: which pending copies it adopts,
and the whole recovery of two survivors of five, in one process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

from kayit.cluster.metadata_group import MetadataGroup
from kayit.cluster.recovery import (
    LogIncomplete,
    PendingCopy,
    Recovery,
    RecoveryRefused,
    SurvivorState,
    adopt,
    placed_in_log,
)
from kayit.metadata.commands import Command, Formed, NodeAdded, NodeRemoved, Placed, PlacedItem
from kayit.metadata.state import ClusterMetadata
from kayit.storage.journal import checksum
from kayit.version import Version
from tests.unit.leader_cluster import ClusterNode, LeaderCluster, run
from tests.waiting import eventually


def v(term: int, seq: int) -> Version:
    return Version(term, seq)


def nothing_placed(message_id: str) -> Version | None:
    return None


def test_the_newest_version_of_each_id_is_adopted_with_every_survivor_that_holds_it() -> None:
    pending = {
        "s1": [PendingCopy("a", v(3, 1), 11), PendingCopy("b", v(3, 2), 21)],
        "s2": [PendingCopy("a", v(3, 1), 11), PendingCopy("b", v(4, 1), 22)],
        "s3": [PendingCopy("a", v(2, 9), 10), PendingCopy("b", v(4, 1), 22)],
    }
    assert adopt(pending, nothing_placed) == [
        PlacedItem("a", v(3, 1), 11, ("s1", "s2")),
        PlacedItem("b", v(4, 1), 22, ("s2", "s3")),
    ]


def test_versions_the_log_places_or_overwrote_are_not_adopted() -> None:
    placed = {"same": v(3, 1), "newer": v(3, 5), "older": v(2, 7)}
    pending = {
        "s1": [
            PendingCopy("same", v(3, 1), 11),
            PendingCopy("newer", v(3, 4), 40),
            PendingCopy("older", v(3, 1), 10),
        ]
    }
    assert adopt(pending, placed.get) == [PlacedItem("older", v(3, 1), 10, ("s1",))]


def test_copies_of_one_version_that_differ_adopt_the_one_most_survivors_hold() -> None:
    pending = {
        "s1": [PendingCopy("a", v(3, 1), 99)],
        "s2": [PendingCopy("a", v(3, 1), 11)],
        "s3": [PendingCopy("a", v(3, 1), 11)],
    }
    assert adopt(pending, nothing_placed) == [PlacedItem("a", v(3, 1), 11, ("s2", "s3"))]


class LogView:
    """What ``placed_in_log`` reads of a MetadataGroup: applied metadata, and the commands
    of the entries not applied yet."""

    def __init__(self, metadata: ClusterMetadata, unapplied: list[Command]) -> None:
        self.metadata = metadata
        self._unapplied = unapplied

    def unapplied_commands(self) -> list[Command]:
        return self._unapplied


def test_the_log_places_the_newest_version_applied_or_not() -> None:
    metadata = ClusterMetadata()
    applied: list[Command] = [
        Formed("c0ffee", 1),
        NodeAdded("s1", "127.0.0.1:1"),
        Placed((PlacedItem("a", v(2, 1), 1, ("s1",)), PlacedItem("b", v(2, 5), 1, ("s1",)))),
    ]
    for index, command in enumerate(applied, start=1):
        metadata.apply(command, 2, index)
    unapplied: list[Command] = [
        Placed((PlacedItem("a", v(3, 1), 1, ("s1",)), PlacedItem("c", v(3, 2), 1, ("s9",)))),
        Placed((PlacedItem("b", v(2, 4), 1, ("s1",)),)),
        NodeRemoved("s9"),
    ]
    placed = placed_in_log(cast(MetadataGroup, LogView(metadata, unapplied)))
    assert [placed(key) for key in "abcd"] == [v(3, 1), v(2, 5), v(3, 2), None]


async def five_nodes(cluster: LeaderCluster) -> ClusterNode:
    """n1 forms the cluster at TOLERANCE=2, four join: five voters with the same metadata."""
    await cluster.bootstrap("n1", tolerance=2)
    for name in ("n2", "n3", "n4", "n5"):
        await cluster.join(name, through="n1")
    ids = {node.id for node in cluster.nodes.values()}

    def settled() -> bool:
        groups = [node.group for node in cluster.nodes.values()]
        return all(g.raft_config.voters == ids and g.metadata == groups[0].metadata for g in groups)

    await eventually(settled, 10.0, "five voters with the same metadata")
    return await cluster.leading_node()


def test_two_survivors_of_five_recover_with_the_copies_the_lost_leader_left_pending(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        leading = await five_nodes(cluster)
        term = leading.group.term
        s1, s2 = [node for node in cluster.nodes.values() if node is not leading][:2]
        lost = [node for node in cluster.nodes.values() if node not in (s1, s2)]
        # Committed: c at (term, 3). Then the leader stored SETs' copies on s1 and s2, and
        # its Placed entries reached only nodes that are lost: the copies stay pending.
        c3 = PlacedItem("c", v(term, 3), checksum(b"c3"), (s1.id, s2.id))
        assert await leading.group.propose_placed([c3], term) == (True,)
        await eventually(lambda: s2.group.metadata.entry("c") is not None, 5.0, "c on s2")
        for node, message_id, message, version in [
            (s1, "a", b"A", v(term, 10)),
            (s2, "a", b"A", v(term, 10)),
            (s2, "b", b"B-old", v(term, 11)),
            (s1, "b", b"B-new", v(term, 12)),
            (s2, "c", b"c2", v(term, 2)),  # older than the index: never adopted
        ]:
            assert (await node.store.put_pending(message_id, message, version)).stored
        for node in lost:
            await cluster.stop(node.name)
        await eventually(
            lambda: s1.group.leader_id is None and s2.group.leader_id is None,
            5.0,
            "the survivors to know of no leader",
        )

        recoveries: dict[str, Recovery] = {}

        async def ask(address: str) -> SurvivorState:
            node = next(node for node in cluster.nodes.values() if node.address == address)
            return await recoveries[node.id].state()

        for node in (s1, s2):
            recoveries[node.id] = Recovery(node.group, node.store, ask)
        survivors = {s1.id: s1.address, s2.id: s2.address}
        recovering, other = sorted((s1, s2), key=lambda n: n.group.last_log, reverse=True)

        # A survivor that committed what this log lacks: refused, nothing changed.
        async def ask_ahead(address: str) -> SurvivorState:
            state = await ask(address)
            return SurvivorState(state.node_id, state.term, None, (10_000, term), state.pending)

        config = recovering.group.raft_config
        with pytest.raises(LogIncomplete):
            await Recovery(recovering.group, recovering.store, ask_ahead).recover(survivors)
        assert recovering.group.raft_config == config and not recovering.group.is_leader

        recovered = await recoveries[recovering.id].recover(survivors)

        assert recovered.leader_id == recovering.id and recovering.group.is_leader
        assert set(recovered.removed) == {node.id for node in lost}
        assert recovered.adopted == 2
        metadata = recovering.group.metadata
        assert metadata.entry("a") == (v(term, 10), checksum(b"A"), tuple(sorted(survivors)))
        assert metadata.entry("b") == (v(term, 12), checksum(b"B-new"), (s1.id,))
        assert metadata.entry("c") == (v(term, 3), checksum(b"c3"), tuple(sorted(survivors)))
        assert set(metadata.nodes) == set(survivors)
        assert metadata.removed == {node.id for node in lost}

        # The other survivor follows, catches up, and votes again.
        def both_vote() -> bool:
            return all(
                node.group.raft_config.voters == set(survivors)
                and node.group.metadata == recovering.group.metadata
                for node in (s1, s2)
            )

        await eventually(both_vote, 10.0, "both survivors voting with the same metadata")
        assert other.group.leader_id == recovering.id

        async def promoted() -> bool:
            return (await s1.committed()).items() >= {"a": v(term, 10), "b": v(term, 12)}.items()

        for _ in range(200):
            if (
                await promoted()
                and (await s2.committed()).get("a") == v(term, 10)
                and not await s1.pending_copies()
                and not await s2.pending_copies()
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the adopted copies were not promoted, or others not dropped")

        with pytest.raises(RecoveryRefused, match="leads"):
            await recoveries[recovering.id].recover(survivors)

    run(tmp_path, scenario)


def test_a_cluster_with_a_leader_is_not_recovered(tmp_path: Path) -> None:
    async def scenario(cluster: LeaderCluster) -> None:
        leading = await cluster.three_nodes()
        follower = next(node for node in cluster.nodes.values() if node is not leading)

        async def never_asked(address: str) -> SurvivorState:
            raise AssertionError("no survivor is asked once the cluster has a leader")

        config = follower.group.raft_config
        with pytest.raises(RecoveryRefused, match="has a leader"):
            await Recovery(follower.group, follower.store, never_asked).recover(
                {follower.id: follower.address}
            )
        assert follower.group.raft_config == config and leading.group.is_leader

    run(tmp_path, scenario)
