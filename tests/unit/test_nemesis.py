"""The nemesis's schedule, run against stand-ins for the processes and the network that record
what was done to them: its promises (budget, every kind, everything healed) are its own logic."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, cast

from kayit.chaos.nemesis import FaultKind, Nemesis, Schedule
from kayit.chaos.nodes import ChaosCluster


@dataclass
class Node:
    number: int
    name: str
    running: bool = True
    paused: bool = False

    async def kill(self) -> None:
        self.running = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


@dataclass
class Network:
    cuts: set[tuple[int, int]] = field(default_factory=set)
    ever_cut: int = 0

    def cut(self, a: int, b: int) -> None:
        assert (a, b) not in self.cuts
        self.cuts.add((a, b))
        self.ever_cut += 1

    def heal(self, a: int, b: int) -> None:
        self.cuts.remove((a, b))


@dataclass
class Cluster:
    nodes: list[Node]
    network: Network = field(default_factory=Network)
    most_faulty: int = 0

    @property
    def members(self) -> list[Node]:
        return self.nodes[1:]

    async def restart(self, node: Node) -> None:
        node.running = True

    def faulty_now(self) -> int:
        cut = {a for a, _ in self.network.cuts}
        bad = {n.number for n in self.nodes if not n.running or n.paused}
        return len(bad | cut)


async def _watch(cluster: Cluster, done: asyncio.Event) -> None:
    while not done.is_set():
        cluster.most_faulty = max(cluster.most_faulty, cluster.faulty_now())
        await asyncio.sleep(0.001)


def test_faults_stay_within_budget_cover_every_kind_and_all_heal() -> None:
    cluster = Cluster([Node(n, f"node-{n}") for n in range(5)])
    schedule = Schedule(
        kinds=frozenset(FaultKind), budget=2, gap=(0.001, 0.01), length=(0.01, 0.05),
        leader_length=(0.01, 0.03),
    )  # fmt: skip
    nemesis = Nemesis(cast(ChaosCluster, cast(Any, cluster)), schedule, random.Random(3))

    async def run() -> None:
        done = asyncio.Event()
        watcher = asyncio.create_task(_watch(cluster, done))
        await nemesis.run(until=time.monotonic() + 1.5)
        done.set()
        await watcher

    asyncio.run(run())
    kinds = {fault.kind for fault in nemesis.faults}
    assert kinds == set(FaultKind)
    assert 2 >= cluster.most_faulty >= 1
    assert all(fault.ended is not None for fault in nemesis.faults)
    assert all(n.running and not n.paused for n in cluster.nodes)
    assert cluster.network.cuts == set() and cluster.network.ever_cut > 0
    leader_faults = [f for f in nemesis.faults if f.kind.value.startswith("leader")]
    assert all(f.node == 0 for f in leader_faults)
    assert all(f.node != 0 for f in nemesis.faults if f not in leader_faults)
