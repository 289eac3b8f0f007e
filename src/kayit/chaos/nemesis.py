"""The nemesis: random faults on a schedule, never more than TOLERANCE faulty nodes at once
(the leader counts: it holds a copy of everything)."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from dataclasses import dataclass, field

from kayit.chaos.nodes import ChaosCluster, ChaosNode

log = logging.getLogger(__name__)


class FaultKind(enum.StrEnum):
    KILL = "kill"  # a member: SIGKILL, later started again on the same data dir
    PAUSE = "pause"  # a member: SIGSTOP, later SIGCONT
    PARTITION = "partition"  # a member cut off from the leader, or from some of the nodes
    LEADER_KILL = "leader-kill"  # until failover exists: the cluster is down until restarted
    LEADER_PAUSE = "leader-pause"


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
    leader_length: tuple[float, float] = (0.5, 4.0)  # the cluster is down meanwhile


class Nemesis:
    def __init__(self, cluster: ChaosCluster, schedule: Schedule, rng: random.Random) -> None:
        self._cluster = cluster
        self._schedule = schedule
        self._rng = rng
        self._faulty: set[int] = set()
        self._running: set[asyncio.Task[None]] = set()
        self.faults: list[Fault] = []

    async def run(self, until: float) -> None:
        """Start faults until ``until`` (monotonic); then wait for every fault to be healed."""
        kinds = sorted(self._schedule.kinds)
        upcoming: list[FaultKind] = []
        while kinds and time.monotonic() < until:
            await asyncio.sleep(self._rng.uniform(*self._schedule.gap))
            if len(self._faulty) >= self._schedule.budget or time.monotonic() >= until:
                continue
            if not upcoming:  # every kind once per round, in a random order: none is left out
                upcoming = self._rng.sample(kinds, len(kinds))
            kind = upcoming[-1]
            node = self._pick(kind)
            if node is None:
                continue
            upcoming.pop()
            self._faulty.add(node)
            task = asyncio.create_task(self._inflict(kind, node))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        if self._running:
            await asyncio.gather(*self._running)

    def _pick(self, kind: FaultKind) -> int | None:
        if kind in (FaultKind.LEADER_KILL, FaultKind.LEADER_PAUSE):
            return None if 0 in self._faulty else 0
        members = [m.number for m in self._cluster.members if m.number not in self._faulty]
        return self._rng.choice(members) if members else None

    async def _inflict(self, kind: FaultKind, number: int) -> None:
        node = self._cluster.nodes[number]
        leader = kind in (FaultKind.LEADER_KILL, FaultKind.LEADER_PAUSE)
        length = self._rng.uniform(
            *(self._schedule.leader_length if leader else self._schedule.length)
        )
        fault = Fault(kind, number, time.monotonic(), f"{node.name} for {length:.1f} s")
        self.faults.append(fault)
        try:
            if kind in (FaultKind.KILL, FaultKind.LEADER_KILL):
                await self._kill(node, length)
            elif kind in (FaultKind.PAUSE, FaultKind.LEADER_PAUSE):
                node.pause()
                await asyncio.sleep(length)
                node.resume()
            else:
                await self._partition(fault, length)
        finally:
            fault.ended = time.monotonic()
            self._faulty.discard(number)

    async def _kill(self, node: ChaosNode, length: float) -> None:
        await node.kill()
        await asyncio.sleep(length)
        await self._cluster.restart(node)

    async def _partition(self, fault: Fault, length: float) -> None:
        """Cut the member from the leader only (it still sees the other members: a partial
        partition), from every other node, or from the leader and some members."""
        network = self._cluster.network
        others = [n.number for n in self._cluster.nodes if n.number != fault.node]
        shape = self._rng.choice(["leader", "isolated", "some"])
        if shape == "leader":
            cut = [0]
        elif shape == "isolated":
            cut = others
        else:
            members = [n for n in others if n != 0]
            cut = [0, *self._rng.sample(members, self._rng.randint(0, len(members)))]
        for other in cut:
            network.cut(fault.node, other)
            fault.cut.append((fault.node, other))
        fault.detail += f", cut from {shape}: nodes {sorted(cut)}"
        try:
            await asyncio.sleep(length)
        finally:
            for a, b in fault.cut:
                network.heal(a, b)
