"""MetadataGroups of several nodes in one process: real gRPC on loopback ports, Raft state in
temporary directories, admissions asked of the leader directly (as the join RPC will)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path

import grpc
import pytest

from kayit.cluster.identity import load_cluster_facts
from kayit.cluster.metadata_group import (
    Admission,
    AdmissionRefused,
    GroupOptions,
    MetadataGroup,
    NotLeading,
)
from kayit.config import ConfigError
from kayit.consensus.node import PersistedState
from kayit.metadata.commands import PlacedItem
from kayit.rpc.channels import SERVER_OPTIONS
from kayit.rpc.kayit_pb2_grpc import add_RaftServicer_to_server
from kayit.version import Version
from tests.unit.leader_cluster import OPTIONS
from tests.waiting import eventually, run_closing


class Cluster:
    """Nodes named n1, n2, ...; each a MetadataGroup with its own gRPC server and directory."""

    def __init__(self, root: Path, options: GroupOptions = OPTIONS) -> None:
        self.root = root
        self.options = options
        self.groups: dict[str, MetadataGroup] = {}
        self.servers: dict[str, grpc.aio.Server] = {}
        self.ports: dict[str, int] = {}

    def raft_dir(self, name: str) -> Path:
        return self.root / name / "raft"

    async def open(self, name: str) -> MetadataGroup:
        """Open the node's directory, on the port it had before if it ran already."""
        server = grpc.aio.server(options=SERVER_OPTIONS)
        port = server.add_insecure_port(f"127.0.0.1:{self.ports.get(name, 0)}")
        self.ports[name] = port
        group = await MetadataGroup.open(self.raft_dir(name), f"127.0.0.1:{port}", self.options)
        add_RaftServicer_to_server(group.raft_service, server)
        await server.start()
        self.groups[name], self.servers[name] = group, server
        return group

    async def bootstrap(self, name: str, tolerance: int) -> MetadataGroup:
        group = await self.open(name)
        await group.bootstrap(tolerance)
        return group

    async def join(self, name: str, through: str) -> MetadataGroup:
        group = await self.open(name)
        await group.join([self.groups[through].address], self.ask)
        return group

    async def ask(self, address: str, node_id: str, own_address: str) -> Admission:
        """The join RPC, minus the wire."""
        for group in self.groups.values():
            if group.address == address:
                return await group.admit(node_id, own_address)
        raise ConnectionRefusedError(address)

    async def stop(self, name: str) -> None:
        await self.servers.pop(name).stop(None)
        await self.groups.pop(name).stop()

    async def close(self) -> None:
        for name in list(self.groups):
            await self.stop(name)

    async def leader(self, timeout: float = 6.0) -> MetadataGroup:
        """The leader, once every running node knows it."""

        def agreed() -> bool:
            known = {group.leader_id for group in self.groups.values()}
            leader_id = known.pop() if len(known) == 1 else None
            return any(g.id == leader_id and g.is_leader for g in self.groups.values())

        await eventually(agreed, timeout, "a leader every node knows")
        return next(group for group in self.groups.values() if group.is_leader)

    def ids(self, names: Iterable[str] | None = None) -> set[str]:
        return {self.groups[name].id for name in (names or self.groups)}

    def settled(self, voters: set[str], learners: frozenset[str] | set[str] = frozenset()) -> bool:
        """Every running node has the same metadata and this configuration."""
        groups = list(self.groups.values())
        return all(
            group.raft_config.voters == voters
            and group.raft_config.learners == learners
            and group.metadata == groups[0].metadata
            for group in groups
        )


def run(
    tmp_path: Path,
    scenario: Callable[[Cluster], Awaitable[None]],
    options: GroupOptions = OPTIONS,
) -> None:
    """Run ``scenario``; whatever happens, every server, group and task is stopped after."""
    run_closing(partial(Cluster, tmp_path, options), scenario)


async def three_nodes(cluster: Cluster) -> MetadataGroup:
    """n1 forms the cluster; n2 joins through it, n3 through n2 (which redirects)."""
    await cluster.bootstrap("n1", tolerance=1)
    await cluster.join("n2", through="n1")
    await cluster.join("n3", through="n2")
    await eventually(lambda: cluster.settled(cluster.ids()), 5.0, "three voters")
    return await cluster.leader()


def test_a_formed_cluster_admits_two_nodes_that_end_as_voters_with_the_same_metadata(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: Cluster) -> None:
        first = await cluster.bootstrap("n1", tolerance=1)
        metadata = first.metadata
        assert first.is_leader and metadata.formed
        assert (metadata.cluster_id, metadata.tolerance) == (first.cluster_id, 1)
        assert dict(metadata.nodes) == {first.id: first.address}
        assert first.raft_config.voters == {first.id}

        await cluster.join("n2", through="n1")
        await cluster.join("n3", through="n2")
        ids = cluster.ids()
        assert len(ids) == 3
        await eventually(lambda: cluster.settled(ids), 5.0, "three voters")
        for group in cluster.groups.values():
            assert group.cluster_id == first.cluster_id
            assert dict(group.metadata.nodes) == {g.id: g.address for g in cluster.groups.values()}
        # Every node keeps every member's address for its next start.
        facts = load_cluster_facts(cluster.raft_dir("n3"), PersistedState())
        assert facts is not None and facts.cluster_id == first.cluster_id
        assert dict(facts.peers) == dict(first.metadata.nodes)
        assert facts.initial_voters == ()

        # Asking again is harmless; a follower points at the leader.
        leader = await cluster.leader()
        n3 = cluster.groups["n3"]
        again = await leader.admit(n3.id, n3.address)
        assert set(again.nodes) == ids
        follower = next(g for g in cluster.groups.values() if not g.is_leader)
        with pytest.raises(NotLeading) as redirect:
            await follower.admit("0123456789ab", "127.0.0.1:1")
        assert redirect.value.leader_address == leader.address

    run(tmp_path, scenario)


def test_a_node_asking_while_the_cluster_forms_is_told_the_founders_address(
    tmp_path: Path,
) -> None:
    """The admission is the joining node's only way to reach the leader until it has caught
    up: one answered between ``Formed`` and the founder's own address would leave it deaf."""

    async def scenario(cluster: Cluster) -> None:
        founder = await cluster.open("n1")
        forming = asyncio.get_running_loop().create_task(founder.bootstrap(tolerance=1))
        while not founder.metadata.formed:
            await asyncio.sleep(0)
        admission = await founder.admit("0123456789ab", "127.0.0.1:1")
        assert admission.nodes.get(founder.id) == founder.address
        await forming

    run(tmp_path, scenario)


def test_beyond_2t_plus_1_nodes_the_others_are_learners_and_a_dead_voter_is_replaced(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: Cluster) -> None:
        await cluster.bootstrap("n1", tolerance=1)
        for name in ("n2", "n3", "n4", "n5"):
            await cluster.join(name, through="n1")

        def voters_and_learners(voters: int, learners: int) -> bool:
            config = cluster.groups["n1"].raft_config
            return (
                (len(config.voters), len(config.learners)) == (voters, learners)
                and config.members == cluster.ids()
                and cluster.settled(set(config.voters), set(config.learners))
            )

        await eventually(lambda: voters_and_learners(3, 2), 5.0, "3 voters and 2 learners")
        leader = await cluster.leader()
        config = leader.raft_config

        # A voter dies: once it has been silent long enough, a live learner takes its vote.
        dead_name = next(
            name
            for name, group in cluster.groups.items()
            if group.id in config.voters and not group.is_leader
        )
        dead = cluster.groups[dead_name].id
        await cluster.stop(dead_name)

        def replaced() -> bool:
            now = leader.raft_config
            return (
                now.voters <= cluster.ids()
                and len(now.voters) == 3
                and dead in now.learners
                and cluster.settled(set(now.voters), set(now.learners))
            )

        await eventually(replaced, 6.0, "a learner to take the dead voter's place")

        # The operator retires the dead node, a learner by now: it leaves the configuration.
        await leader.remove(dead)
        assert dead in leader.metadata.removed
        assert dead not in leader.raft_config.members
        assert len(leader.raft_config.voters) == 3

    run(tmp_path, scenario)


def test_a_killed_leader_is_replaced_and_rejoins_under_its_id_when_restarted(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: Cluster) -> None:
        old = await three_nodes(cluster)
        ids = cluster.ids()
        items = [PlacedItem(f"m{i}", Version(old.term, i + 1), i, (old.id,)) for i in range(10)]
        assert await old.propose_placed(items, old.term) == (True,) * 10
        before = old.metadata
        old_name = next(name for name, group in cluster.groups.items() if group is old)
        old_id, old_term = old.id, old.term
        await cluster.stop(old_name)

        new = await cluster.leader(timeout=6.0)
        assert new.id != old_id and new.term > old_term
        assert dict(new.metadata.nodes) == dict(before.nodes)
        assert new.metadata.entry("m3") == before.entry("m3")
        later = PlacedItem("later", Version(new.term, 1), 7, (new.id,))
        assert await new.propose_placed([later], new.term) == (True,)

        back = await cluster.open(old_name)
        assert back.id == old_id and back.is_member
        with pytest.raises(ConfigError):
            await back.bootstrap(tolerance=1)
        await back.resume()
        await eventually(lambda: cluster.settled(ids), 5.0, "the old leader to catch up")
        assert back.metadata.entry("later") is not None
        assert back.leader_id == (await cluster.leader()).id

    run(tmp_path, scenario)


def test_a_node_that_lost_its_raft_dir_joins_under_a_new_id_that_replaces_the_old(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await three_nodes(cluster)
        lost_name = next(name for name, group in cluster.groups.items() if not group.is_leader)
        lost = cluster.groups[lost_name]
        old_id, address = lost.id, lost.address
        await cluster.stop(lost_name)
        shutil.rmtree(cluster.raft_dir(lost_name))

        fresh = await cluster.open(lost_name)
        assert fresh.id != old_id and not fresh.is_member
        assert fresh.address == address
        learner_seen = asyncio.Event()

        def watch_learner() -> bool:
            if fresh.id in leader.raft_config.learners:
                learner_seen.set()
            return False

        watcher = asyncio.create_task(eventually(watch_learner, 10.0, "never"))
        try:
            await fresh.join([leader.address], cluster.ask)
            await eventually(lambda: cluster.settled(cluster.ids()), 5.0, "the new id to vote")
        finally:
            watcher.cancel()
            with pytest.raises(asyncio.CancelledError):
                await watcher
        assert learner_seen.is_set()  # it voted only after being a learner
        for group in cluster.groups.values():
            assert old_id in group.metadata.removed
            assert old_id not in group.raft_config.members
            assert group.metadata.nodes[fresh.id] == address
        with pytest.raises(AdmissionRefused):
            await leader.admit(old_id, "127.0.0.1:1")

    run(tmp_path, scenario)


def test_a_removed_node_leaves_the_metadata_and_the_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await three_nodes(cluster)
        gone_name = next(name for name, group in cluster.groups.items() if not group.is_leader)
        gone = cluster.groups[gone_name].id
        with caplog.at_level(logging.WARNING, logger="kayit.cluster.metadata_group"):
            await leader.remove(gone)
            assert gone in leader.metadata.removed and gone not in leader.metadata.nodes
            assert gone not in leader.raft_config.members
            await cluster.stop(gone_name)
            await eventually(
                lambda: cluster.settled(cluster.ids()), 5.0, "the others to agree on two voters"
            )
            # Two voters: the leader says the group now survives fewer failures than it should.
            await eventually(
                lambda: "has 2 voter(s)" in caplog.text, 2.0, "a warning about too few voters"
            )
        assert "survives fewer leader failures than TOLERANCE=1" in caplog.text
        with pytest.raises(ValueError):
            await leader.remove("0123456789ab")
        # The two that are left still commit.
        item = PlacedItem("after", Version(leader.term, 1), 1, (leader.id,))
        assert await leader.propose_placed([item], leader.term) == (True,)

    run(tmp_path, scenario)


def test_calls_queued_behind_an_entry_wait_placed_linger_and_share_the_next(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await three_nodes(cluster)
        term, holders = leader.term, tuple(sorted(cluster.ids()))

        def placed(i: int) -> Awaitable[tuple[bool, ...]]:
            item = PlacedItem(f"id-{i}", Version(term, i + 1), i, holders)
            return leader.propose_placed([item], term)

        before = leader.metadata.applied_index
        lone = asyncio.ensure_future(placed(0))
        queued = asyncio.ensure_future(placed(1))  # while the lone call's entry commits
        # The lone call proposed its entry at once, without waiting for the one behind it.
        assert await lone == (True,)
        assert not queued.done()
        # The next entry is proposed only after the linger: a call made meanwhile joins it.
        # (The linger is long so that a slow machine still makes the call within it.)
        await asyncio.sleep(0.1)
        assert not queued.done()
        late = asyncio.ensure_future(placed(2))
        assert list(await asyncio.gather(queued, late)) == [(True,), (True,)]
        assert leader.metadata.applied_index - before == 2

    run(tmp_path, scenario, replace(OPTIONS, placed_linger=2.0))


def test_concurrent_placements_share_a_few_log_entries(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await three_nodes(cluster)
        holders = tuple(sorted(cluster.ids()))
        before = leader.metadata.applied_index
        items = [
            PlacedItem(f"id-{i}", Version(leader.term, i + 1), i, holders) for i in range(1000)
        ]
        results = await asyncio.gather(
            *(leader.propose_placed([item], leader.term) for item in items)
        )
        assert results == [(True,)] * 1000
        assert leader.metadata.applied_index - before <= 3
        # Placing an older version than the committed one takes no effect, for that item only.
        older = PlacedItem("id-5", Version(leader.term, 1), 5, holders)
        newer = PlacedItem("new", Version(leader.term, 5000), 9, holders)
        assert await leader.propose_placed([older, newer], leader.term) == (False, True)
        await eventually(lambda: cluster.settled(cluster.ids()), 5.0, "every node to apply them")
        for group in cluster.groups.values():
            assert group.metadata.entry("id-999") == leader.metadata.entry("id-999")
        follower = next(group for group in cluster.groups.values() if not group.is_leader)
        with pytest.raises(NotLeading):
            await follower.propose_placed([newer], follower.term)

    run(tmp_path, scenario)
