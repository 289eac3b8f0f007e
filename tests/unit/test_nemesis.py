"""The nemesis, run against stand-ins for the processes, the network and the cluster's elections
that record what was done to them and who led at that moment: its promises (budget, every kind,
the leader found anew each time, nothing while an election is under way, everything healed) are
its own logic. Also its pure parts: where a fault lands, and who leads by the nodes' replies."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from kayit.chaos.nemesis import LEADER_KINDS, Draws, FaultKind, Nemesis, Schedule, Shape, aim
from kayit.chaos.network import Loopback
from kayit.chaos.nodes import ChaosCluster, Leading, leader_of
from kayit.local_cluster import ClusterPlan
from kayit.rpc import kayit_pb2 as pb

SCHEDULE = Schedule(
    kinds=frozenset(FaultKind), budget=2, gap=(0.001, 0.01), length=(0.01, 0.05)
)  # fmt: skip


@dataclass
class Hit:
    """A kill, pause or cut, and the node that led when it happened (None: an election)."""

    what: str
    node: int
    leader: int | None
    cut_from: int | None = None


@dataclass
class Node:
    number: int
    name: str
    cluster: Cluster
    running: bool = True
    paused: bool = False

    async def kill(self) -> None:
        self.cluster.hit(Hit("kill", self.number, self.cluster.leader))
        self.running = False

    def pause(self) -> None:
        self.cluster.hit(Hit("pause", self.number, self.cluster.leader))
        self.paused = True

    def resume(self) -> None:
        self.paused = False


@dataclass
class Network:
    cluster: Cluster
    cuts: set[tuple[int, int]] = field(default_factory=set)

    def cut(self, a: int, b: int) -> None:
        assert (a, b) not in self.cuts
        self.cluster.hit(Hit("cut", a, self.cluster.leader, cut_from=b))
        self.cuts.add((a, b))

    def heal(self, a: int, b: int) -> None:
        self.cuts.remove((a, b))


class Cluster:
    """Elections as the nemesis sees them: when the node that leads is killed or paused, the
    next ``election_answers`` questions find no leader; then the next healthy node after it
    is elected in a new term."""

    def __init__(self, nodes: int, election_answers: int = 2, leader: int | None = 0) -> None:
        self.nodes = [Node(n, f"node{n}:{5555 + n}", self) for n in range(nodes)]
        self.network = Network(self)
        self.leader = leader
        self.term = 1
        self.election_answers = election_answers
        self._election_left = election_answers if leader is None else 0
        self._deposed = 0
        self.no_leader_answers = 0
        self.hits: list[Hit] = []
        self.most_faulty = 0

    def hit(self, hit: Hit) -> None:
        self.hits.append(hit)
        if hit.what != "cut" and hit.node == self.leader:
            self.leader = None
            self._election_left = self.election_answers
            self._deposed = hit.node

    async def leading(self) -> Leading | None:
        if self.leader is None:
            if self._election_left > 0:
                self._election_left -= 1
                self.no_leader_answers += 1
                return None
            count = len(self.nodes)
            after = [(self._deposed + step) % count for step in range(1, count)]
            self.leader = next(n for n in after if self._healthy(n))
            self.term += 1
        return Leading(self.leader, self.term)

    def _healthy(self, number: int) -> bool:
        node = self.nodes[number]
        return node.running and not node.paused

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


def _run(cluster: Cluster, seconds: float, seed: int = 3) -> Nemesis:
    nemesis = Nemesis(cast(ChaosCluster, cast(Any, cluster)), SCHEDULE, random.Random(seed))

    async def run() -> None:
        done = asyncio.Event()
        watcher = asyncio.create_task(_watch(cluster, done))
        await nemesis.run(until=time.monotonic() + seconds)
        done.set()
        await watcher

    asyncio.run(run())
    return nemesis


def test_faults_stay_within_budget_cover_every_kind_and_all_heal() -> None:
    cluster = Cluster(5)
    nemesis = _run(cluster, 1.5)
    assert {fault.kind for fault in nemesis.faults} == set(FaultKind)
    assert 2 >= cluster.most_faulty >= 1
    assert all(fault.ended is not None for fault in nemesis.faults)
    assert all(n.running and not n.paused for n in cluster.nodes)
    assert cluster.network.cuts == set()
    assert any(hit.what == "cut" for hit in cluster.hits)


def test_leader_faults_hit_whoever_leads_then_and_the_others_never_do() -> None:
    cluster = Cluster(5)
    nemesis = _run(cluster, 1.5)
    kills_and_pauses = [hit for hit in cluster.hits if hit.what != "cut"]
    faults = [f for f in nemesis.faults if f.kind is not FaultKind.PARTITION]
    assert [f.node for f in faults] == [hit.node for hit in kills_and_pauses]
    for fault, hit in zip(faults, kills_and_pauses, strict=True):
        assert hit.leader is not None, f"{fault.kind} started during an election"
        assert (hit.node == hit.leader) == (fault.kind in LEADER_KINDS), fault.detail
        assert fault.detail.startswith(f"node {hit.node} (node{hit.node}:{5555 + hit.node}")
    leader_faults = [f for f in faults if f.kind in LEADER_KINDS]
    # Each leader fault deposed its node, so the next one found another: not node 0 for good.
    assert len({f.node for f in leader_faults}) >= 2
    assert all("leading in term" in f.detail for f in leader_faults)
    assert cluster.no_leader_answers > 0  # elections were seen, and waited out


def test_partitions_cut_a_node_that_does_not_lead_from_the_one_that_does() -> None:
    cluster = Cluster(5)
    nemesis = _run(cluster, 1.5)
    partitions = [f for f in nemesis.faults if f.kind is FaultKind.PARTITION]
    assert partitions
    cuts = iter(hit for hit in cluster.hits if hit.what == "cut")
    shapes = set()
    for fault in partitions:
        hits = [next(cuts) for _ in fault.cut]
        leader = hits[0].leader
        assert leader is not None and fault.node != leader
        assert all(h.node == fault.node and h.leader == leader for h in hits)
        cut_from = {h.cut_from for h in hits}
        shape = Shape(fault.detail.split("cut from ")[1].split(":")[0])
        shapes.add(shape)
        if shape is Shape.ISOLATED:
            assert cut_from == set(range(5)) - {fault.node}
        elif shape is Shape.LEADER:
            assert cut_from == {leader}
        else:
            assert leader in cut_from and fault.node not in cut_from
    assert len(shapes) >= 2


def test_no_fault_starts_while_no_node_leads() -> None:
    cluster = Cluster(5, election_answers=10**9, leader=None)
    nemesis = _run(cluster, 0.3)
    assert cluster.no_leader_answers > 0
    assert nemesis.faults == [] and cluster.hits == []


# ---- where a fault lands -----------------------------------------------------------------


@st.composite
def situations(
    draw: st.DrawFn,
) -> tuple[FaultKind, Draws, int, set[int], Leading | None]:
    nodes = draw(st.integers(3, 7))
    unit = st.floats(0, 1, exclude_max=True)
    draws = Draws(
        node=draw(unit),
        length=draw(st.floats(0.5, 8)),
        shape=draw(unit),
        others=tuple(draw(unit) for _ in range(nodes)),
    )
    faulty = draw(st.sets(st.integers(0, nodes - 1), max_size=nodes - 1))
    # The leader named may be one the nemesis broke (its followers have not noticed yet).
    leading = draw(st.none() | st.builds(Leading, st.integers(0, nodes - 1), st.integers(1, 9)))
    return draw(st.sampled_from(FaultKind)), draws, nodes, faulty, leading


@given(situations())
def test_a_fault_lands_by_the_rules(
    situation: tuple[FaultKind, Draws, int, set[int], Leading | None],
) -> None:
    kind, draws, nodes, faulty, leading = situation
    target = aim(kind, draws, nodes, faulty, leading)
    if leading is None or leading.node in faulty:
        assert target is None  # the node said to lead is down: an election is due
        return
    if kind in LEADER_KINDS:
        assert target is not None
        assert (target.node, target.leading_term) == (leading.node, leading.term)
        return
    eligible = set(range(nodes)) - faulty - {leading.node}
    if not eligible:
        assert target is None
        return
    assert target is not None and target.node in eligible
    assert target.length == draws.length and target.leading_term is None
    if kind is not FaultKind.PARTITION:
        assert target.shape is None and target.cut == ()
        return
    others = set(range(nodes)) - {target.node}
    assert set(target.cut) <= others and len(set(target.cut)) == len(target.cut)
    if target.shape is Shape.ISOLATED:
        assert set(target.cut) == others
    elif target.shape is Shape.LEADER:
        assert target.cut == (leading.node,)
    else:
        assert leading.node in target.cut


def test_the_same_draws_pick_by_position_among_the_nodes_that_may_be_hit() -> None:
    draws = Draws(node=0.5, length=2.0, shape=0.9, others=(0.1, 0.9, 0.1, 0.9, 0.1))
    # Eligible: 1, 3, 4 (0 leads, 2 is faulty); 0.5 of three is the second.
    target = aim(FaultKind.PARTITION, draws, 5, {2}, Leading(0, 4))
    assert target is not None
    assert (target.node, target.shape, target.cut) == (3, Shape.SOME, (0, 2, 4))
    # The same numbers with node 3 leading: the eligible are 0, 1, 4.
    moved = aim(FaultKind.PARTITION, draws, 5, {2}, Leading(3, 5))
    assert moved is not None
    assert (moved.node, moved.cut) == (1, (0, 2, 3, 4))


# ---- who leads ---------------------------------------------------------------------------

ADDRESSES = [f"10.0.0.{n}:5555" for n in range(5)]


def status(term: int, role: str = "member", leader: str = "") -> pb.StatusReply:
    return pb.StatusReply(term=term, role=role, leader_address=leader)


def test_the_node_that_says_it_leads_in_the_newest_term_leads() -> None:
    replies = {
        0: status(3, "leader"),  # deposed: it has not heard of term 4 yet
        1: status(4, leader=ADDRESSES[2]),
        2: status(4, "leader"),
    }
    assert leader_of(replies, ADDRESSES) == Leading(2, 4)


def test_a_leader_that_does_not_answer_is_found_by_its_followers() -> None:
    replies = {1: status(4, leader=ADDRESSES[3]), 2: status(4, leader=ADDRESSES[3])}
    assert leader_of(replies, ADDRESSES) == Leading(3, 4)


def test_no_leader_while_the_newest_term_has_none() -> None:
    assert leader_of({}, ADDRESSES) is None
    # Node 0 still thinks it leads term 3, but a campaign for term 4 is under way.
    assert leader_of({0: status(3, "leader"), 1: status(4), 2: status(4)}, ADDRESSES) is None
    split = {1: status(4, leader=ADDRESSES[2]), 3: status(4, leader=ADDRESSES[4])}
    assert leader_of(split, ADDRESSES) is None
    assert leader_of({1: status(4, leader="10.9.9.9:5555")}, ADDRESSES) is None


def test_tracebacks_and_fatal_errors_of_grpc_in_node_logs_are_problems(tmp_path: Path) -> None:
    plan = ClusterPlan(1, 0, 6666, 5555, tmp_path / "data", "everysec", 10.0)
    cluster = ChaosCluster(plan, Loopback(), tmp_path / "logs")
    first, second = cluster.nodes
    first.log_path.write_text(
        "2026-11-27 11:09:20,473 INFO deleted 20 copies\n"
        "F1127 11:09:27.122947   23225 ev_epoll1_linux.cc:456] Check failed: wakeup\n"
        "*** Check failure stack trace: ***\n"
        "I1127 11:15:42.164405   19166 fork_posix.cc:71] Other threads are calling into gRPC\n"
    )
    second.log_path.write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n'
        "FAILED is not a gRPC line\n"
    )
    assert cluster.tracebacks() == [
        f"{first.name}: fatal error in its log: F1127 11:09:27.122947   23225 "
        "ev_epoll1_linux.cc:456] Check failed: wakeup",
        f"{second.name}: traceback in its log: ValueError: boom",
    ]


class FirstRestartFails(Cluster):
    """A node that dies as it starts, the first time only: the harness's wait times out."""

    def __init__(self, nodes: int) -> None:
        super().__init__(nodes)
        self.failed_restarts = 0

    async def restart(self, node: Node) -> None:
        if not self.failed_restarts:
            self.failed_restarts += 1
            raise TimeoutError(f"{node.name}'s client port did not open")
        await super().restart(node)


def test_a_node_that_does_not_come_back_is_a_problem_and_is_started_again() -> None:
    cluster = FirstRestartFails(5)
    nemesis = _run(cluster, 0.5)
    assert cluster.failed_restarts == 1
    (problem,) = nemesis.problems
    assert problem.startswith("restart 1 of node") and "did not open" in problem
    assert all(node.running for node in cluster.nodes)  # started again, the run went on
