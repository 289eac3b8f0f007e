"""The nemesis: random faults on a schedule, never more than TOLERANCE faulty nodes at once.

Raft elects any node, so the nemesis asks the nodes who leads before each fault: a leader fault
hits the node that leads at that moment, every other fault a node that does not. While no node
leads (an election is under way), or the one said to lead is already faulty, no fault starts.
The seeded numbers of an attempt are drawn before the cluster is asked, the same ones whatever
it answers: a run with the same seed makes the same choices as far as the cluster's state lets
it.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Set
from dataclasses import dataclass, field

from kayit.chaos.nodes import ChaosCluster, ChaosNode, Leading


class FaultKind(enum.StrEnum):
    KILL = "kill"  # a node that does not lead: SIGKILL, later started again on the same data dir
    PAUSE = "pause"  # a node that does not lead: SIGSTOP, later SIGCONT
    PARTITION = "partition"  # a node that does not lead, cut off from some others
    LEADER_KILL = "leader-kill"  # the node that leads: another is elected meanwhile
    LEADER_PAUSE = "leader-pause"  # the node that leads: it must find itself deposed on waking


LEADER_KINDS = frozenset({FaultKind.LEADER_KILL, FaultKind.LEADER_PAUSE})


class Shape(enum.StrEnum):
    """Whom a partitioned node is cut from."""

    LEADER = "leader"  # the node that leads only: it still sees the others (a partial partition)
    ISOLATED = "isolated"  # every other node
    SOME = "some"  # the node that leads and some of the others


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    node: int
    started: float
    detail: str = ""
    ended: float | None = None
    cut: list[tuple[int, int]] = field(default_factory=list)

    def as_json(self, origin: float) -> dict[str, object]:
        ended = None if self.ended is None else self.ended - origin
        return {"kind": self.kind.value, "node": self.node, "started": self.started - origin,
                "ended": ended, "detail": self.detail}  # fmt: skip

    def describe(self, origin: float) -> str:
        end = "" if self.ended is None else f"{self.ended - origin:8.2f}"
        return f"{self.started - origin:8.2f} .. {end:>8} {self.kind.value:<12} {self.detail}"


@dataclass(frozen=True, slots=True)
class Schedule:
    kinds: frozenset[FaultKind]
    budget: int  # faulty nodes at once: TOLERANCE
    gap: tuple[float, float] = (0.5, 3.0)  # seconds between fault starts
    length: tuple[float, float] = (1.0, 8.0)  # seconds a fault lasts


@dataclass(frozen=True, slots=True)
class Draws:
    """The seeded numbers of one attempt to start a fault, each in [0, 1) but ``length``."""

    node: float  # which of the nodes the fault may hit
    length: float  # seconds
    shape: float  # a partition's Shape
    others: tuple[float, ...]  # one per node: below 0.5, a SOME partition cuts it off too

    @classmethod
    def take(cls, rng: random.Random, schedule: Schedule, nodes: int) -> Draws:
        return cls(
            node=rng.random(),
            length=rng.uniform(*schedule.length),
            shape=rng.random(),
            others=tuple(rng.random() for _ in range(nodes)),
        )


@dataclass(frozen=True, slots=True)
class Target:
    """A fault aimed: its node and, for a partition, the nodes it is cut from."""

    kind: FaultKind
    node: int
    length: float
    leading_term: int | None = None  # a leader fault: the term its node leads in
    shape: Shape | None = None
    cut: tuple[int, ...] = ()


def aim(
    kind: FaultKind, draws: Draws, nodes: int, faulty: Set[int], leading: Leading | None
) -> Target | None:
    """Where a fault of ``kind`` lands among ``nodes`` nodes, given those already faulty and
    the node that leads now; None when it cannot land this round."""
    if leading is None or leading.node in faulty:
        # An election, or one soon: followers name a killed or paused leader until they miss
        # its heartbeats. Who is about to lead is unknown.
        return None
    if kind in LEADER_KINDS:
        return Target(kind, leading.node, draws.length, leading_term=leading.term)
    eligible = [n for n in range(nodes) if n not in faulty and n != leading.node]
    if not eligible:
        return None
    node = eligible[int(draws.node * len(eligible))]
    if kind is not FaultKind.PARTITION:
        return Target(kind, node, draws.length)
    shapes = list(Shape)
    shape = shapes[int(draws.shape * len(shapes))]
    others = [n for n in range(nodes) if n != node]
    if shape is Shape.ISOLATED:
        cut = others
    elif shape is Shape.LEADER:
        cut = [leading.node]
    else:
        some = [n for n in others if n != leading.node and draws.others[n] < 0.5]
        cut = sorted([leading.node, *some])
    return Target(kind, node, draws.length, shape=shape, cut=tuple(cut))


class Nemesis:
    def __init__(self, cluster: ChaosCluster, schedule: Schedule, rng: random.Random) -> None:
        self._cluster = cluster
        self._schedule = schedule
        self._rng = rng
        self._faulty: set[int] = set()
        self._running: set[asyncio.Task[None]] = set()
        self.faults: list[Fault] = []
        # What went wrong with the nodes themselves: a node that did not come back.
        self.problems: list[str] = []

    async def run(self, until: float) -> None:
        """Start faults until ``until`` (monotonic); then wait for every fault to be healed."""
        kinds = sorted(self._schedule.kinds)
        nodes = len(self._cluster.nodes)
        upcoming: list[FaultKind] = []
        while kinds and time.monotonic() < until:
            await asyncio.sleep(self._rng.uniform(*self._schedule.gap))
            if len(self._faulty) >= self._schedule.budget or time.monotonic() >= until:
                continue
            if not upcoming:  # every kind once per round, in a random order: none is left out
                upcoming = self._rng.sample(kinds, len(kinds))
            draws = Draws.take(self._rng, self._schedule, nodes)
            leading = await self._cluster.leading()
            target = aim(upcoming[-1], draws, nodes, self._faulty, leading)
            if target is None:
                continue  # the kind waits for the next attempt
            upcoming.pop()
            self._faulty.add(target.node)
            task = asyncio.create_task(self._inflict(target))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        if self._running:
            await asyncio.gather(*self._running)

    async def _inflict(self, target: Target) -> None:
        node = self._cluster.nodes[target.node]
        fault = Fault(target.kind, target.node, time.monotonic(), _detail(node, target))
        self.faults.append(fault)
        try:
            if target.kind in (FaultKind.KILL, FaultKind.LEADER_KILL):
                await self._kill(node, target.length)
            elif target.kind in (FaultKind.PAUSE, FaultKind.LEADER_PAUSE):
                node.pause()
                await asyncio.sleep(target.length)
                node.resume()
            else:
                await self._partition(fault, target)
        finally:
            fault.ended = time.monotonic()
            self._faulty.discard(target.node)

    async def _kill(self, node: ChaosNode, length: float) -> None:
        await node.kill()
        await asyncio.sleep(length)
        for attempt in (1, 2):
            try:
                await self._cluster.restart(node)
                return
            except TimeoutError as error:
                # A node that dies while it starts is a crash to report; started once more,
                # it keeps the rest of the run at full strength.
                self.problems.append(f"restart {attempt} of {node.name} failed: {error}")
                await node.kill()

    async def _partition(self, fault: Fault, target: Target) -> None:
        network = self._cluster.network
        for other in target.cut:
            network.cut(fault.node, other)
            fault.cut.append((fault.node, other))
        try:
            await asyncio.sleep(target.length)
        finally:
            for a, b in fault.cut:
                network.heal(a, b)


def _detail(node: ChaosNode, target: Target) -> str:
    leading = "" if target.leading_term is None else f", leading in term {target.leading_term}"
    text = f"node {target.node} ({node.name}{leading}) for {target.length:.1f} s"
    if target.shape is not None:
        text += f", cut from {target.shape.value}: nodes {list(target.cut)}"
    return text
