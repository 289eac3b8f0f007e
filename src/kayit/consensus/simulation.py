"""A seeded, deterministic simulation of a Raft cluster under faults, checking safety as it goes.

Each schedule runs ``RaftNode``s over a fake network that drops, delays (in ticks), duplicates,
reorders and partitions messages (full, majority/minority and partial: A-B and B-C up, A-C
down), crashes nodes (losing all that no Ready/advance cycle persisted yet, including messages
not yet sent) and restarts them from their simulated disk. Drivers process a node's Ready only
some of the time, so unpersisted state piles up and is lost on a crash. Applications compact
their logs into snapshots at random, so lagging nodes catch up by InstallSnapshot. Leaders,
stale ones too, are asked at random to propose, to serve ReadIndex reads and to hand over.

``SafetyChecker`` runs after every tick, step and Ready, and raises ``InvariantViolation``:
election safety, log matching, leader completeness, state machine safety (entries and
snapshots), commit and apply monotonicity, and no stale read. After the faults stop and the
network heals, a leader must be elected and a new command applied on every node within a
bounded number of ticks (liveness, loosely).

The same seed always gives the same schedule: ``run_schedule(seed, nodes)`` reproduces it."""

from __future__ import annotations

import contextlib
import random
import zlib
from collections import deque
from dataclasses import dataclass, field

from kayit.consensus.messages import Entry, HardState, Message, Snapshot
from kayit.consensus.node import (
    NotLeaderError,
    PersistedState,
    RaftConfig,
    RaftNode,
    ReadState,
    Role,
)


class InvariantViolation(AssertionError):
    pass


@dataclass(frozen=True, slots=True)
class FaultProfile:
    """Per-tick (or per-message) probabilities of each fault while faults are on."""

    fault_ticks: int = 150
    drop: float = 0.1
    duplicate: float = 0.05
    max_delay: int = 3
    crash: float = 0.02
    restart: float = 0.1
    repartition: float = 0.03
    propose: float = 0.3
    # How often a driver gets round to a node's Ready after a step (else it waits).
    process_ready: float = 0.6
    transfer: float = 0.01
    read: float = 0.2
    compact: float = 0.05
    # After the heal: ticks allowed to elect a leader and apply a new command everywhere.
    liveness_ticks: int = 400

    @classmethod
    def draw(cls, rng: random.Random) -> FaultProfile:
        """A random mix, from calm to harsh, so that rare interleavings come up somewhere."""
        return cls(
            drop=rng.choice([0.0, 0.05, 0.15, 0.3]),
            duplicate=rng.choice([0.0, 0.05, 0.2]),
            max_delay=rng.choice([0, 2, 5]),
            crash=rng.choice([0.005, 0.02, 0.08]),
            restart=rng.choice([0.05, 0.2, 0.6]),
            repartition=rng.choice([0.0, 0.03, 0.1]),
            propose=rng.choice([0.1, 0.3, 0.8]),
            process_ready=rng.choice([0.3, 0.6, 0.9]),
            compact=rng.choice([0.0, 0.05, 0.3]),
        )


def draw_config(rng: random.Random) -> RaftConfig:
    """Timeouts short enough for many elections per schedule; features on and off."""
    election_ticks = rng.choice([4, 6, 10])
    return RaftConfig(
        election_ticks=election_ticks,
        heartbeat_ticks=rng.choice([1, election_ticks // 2]),
        max_entries_per_append=rng.choice([1, 2, 64]),
        pre_vote=rng.random() < 0.7,
        check_quorum=rng.random() < 0.7,
    )


@dataclass(slots=True)
class _Commit:
    entry: Entry
    term: int  # the term of the node that first reported it committed


@dataclass(slots=True)
class _Watch:
    """What the checker last saw of one node incarnation."""

    log: list[Entry] = field(default_factory=list)
    commit: int = 0
    applied: int = 0
    snapshot_index: int = 0
    leader_term: int = 0
    checked_commits: int = 0


def digest(previous: int, entry: Entry) -> int:
    """The simulated application's state: a checksum chained over the entries it applied."""
    return zlib.crc32(b"%d:%d:%s" % (entry.index, entry.term, entry.data), previous)


class SafetyChecker:
    """Raft's safety properties (Raft §5.4, Figure 3), checked incrementally over all nodes."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        # (index, term) -> (previous entry's term, entry): one entry per index and term, ever,
        # and the same predecessor, which by induction gives the log matching property.
        self._entries: dict[tuple[int, int], tuple[int, Entry]] = {}
        self._commits: dict[int, _Commit] = {}
        self._commit_order: list[_Commit] = []
        # The application state after each committed index, to check snapshots against.
        self._digests: list[int] = [0]
        self._watches: dict[str, _Watch] = {}
        # Read context -> how many entries were committed when the read was asked.
        self._reads: dict[bytes, int] = {}

    @property
    def committed(self) -> int:
        return len(self._commits)

    def forget(self, node_id: str) -> None:
        """A crash: the next incarnation starts from its persisted state."""
        self._watches.pop(node_id, None)

    def committed_entry(self, index: int) -> Entry | None:
        commit = self._commits.get(index)
        return None if commit is None else commit.entry

    def _watch(self, node: RaftNode) -> _Watch:
        return self._watches.setdefault(node.id, _Watch(commit=node.commit, applied=node.applied))

    def check(self, node: RaftNode) -> None:
        watch = self._watch(node)
        self._check_log(node, watch)
        self._check_commit(node, watch)
        if node.role is Role.LEADER:
            self._check_leader(node, watch)

    def check_applied(self, node: RaftNode, entries: tuple[Entry, ...]) -> None:
        watch = self._watch(node)
        for entry in entries:
            if entry.index != watch.applied + 1:
                self._fail(f"{node.id} applied {entry.index} after {watch.applied}")
            commit = self._commits.get(entry.index)
            if commit is None or commit.entry != entry:
                self._fail(f"{node.id} applied {entry} but committed was {commit}")
            watch.applied = entry.index

    def check_snapshot(self, node: RaftNode, snapshot: Snapshot) -> None:
        """A snapshot is the state after applying exactly the committed entries it covers."""
        commit = self._commits.get(snapshot.index)
        if (
            commit is None
            or commit.entry.term != snapshot.term
            or snapshot.data != b"%d" % self._digests[snapshot.index]
        ):
            self._fail(f"{node.id} has a snapshot {snapshot} unlike the committed log")
        watch = self._watch(node)
        watch.applied = max(watch.applied, snapshot.index)

    def begin_read(self, context: bytes) -> None:
        self._reads[context] = len(self._commits)

    def check_reads(self, node: RaftNode, reads: tuple[ReadState, ...]) -> None:
        """Linearizable reads: a read index covers every entry committed before the read."""
        for read in reads:
            committed_before = self._reads.pop(read.context)
            if not committed_before <= read.index <= len(self._commits):
                self._fail(
                    f"stale read: {node.id} gave index {read.index} for {read.context!r}, "
                    f"{committed_before} entries were committed before it was asked"
                )

    def _check_log(self, node: RaftNode, watch: _Watch) -> None:
        log, snapshot = node.log.entries, node.log.snapshot
        if log == watch.log and snapshot.index == watch.snapshot_index:
            return  # the same entry objects: nothing new to check
        start = 0
        if snapshot.index == watch.snapshot_index:
            for seen, current in zip(watch.log, log, strict=False):
                if seen is not current:
                    break
                start += 1
        for position in range(start, len(log)):
            entry = log[position]
            if entry.index != snapshot.index + position + 1:
                self._fail(f"{node.id} holds entry {entry.index} after {position} others")
            prev_term = log[position - 1].term if position else snapshot.term
            known = self._entries.setdefault((entry.index, entry.term), (prev_term, entry))
            if known != (prev_term, entry):
                self._fail(
                    f"log matching: {node.id} has {entry} after term {prev_term}, "
                    f"elsewhere {known[1]} after term {known[0]}"
                )
        watch.log, watch.snapshot_index = list(log), snapshot.index

    def _check_commit(self, node: RaftNode, watch: _Watch) -> None:
        if node.commit < watch.commit:
            self._fail(f"{node.id} commit went back from {watch.commit} to {node.commit}")
        if node.commit > node.log.last_index:
            self._fail(f"{node.id} commit {node.commit} past its log {node.log.last_index}")
        for index in range(watch.commit + 1, node.commit + 1):
            entry = node.log.entry(index)
            known = self._commits.get(index)
            if entry is None:
                if known is None:  # compacted: a snapshot holds only committed entries
                    self._fail(f"{node.id} commit {index} is in a snapshot nobody committed")
                continue
            if known is None:
                known = _Commit(entry, node.term)
                self._commits[index] = known
                self._commit_order.append(known)
                self._digests.append(digest(self._digests[-1], entry))
            elif known.entry != entry:
                self._fail(f"{node.id} committed {entry}, another node committed {known.entry}")
        watch.commit = node.commit

    def _check_leader(self, node: RaftNode, watch: _Watch) -> None:
        leader = self.leaders.setdefault(node.term, node.id)
        if leader != node.id:
            self._fail(f"election safety: {leader} and {node.id} both lead term {node.term}")
        if watch.leader_term != node.term:
            watch.leader_term, watch.checked_commits = node.term, 0
        # Leader completeness: whatever was committed in an earlier term is in this log.
        for commit in self._commit_order[watch.checked_commits :]:
            index = commit.entry.index
            if (
                commit.term < node.term
                and index > node.log.snapshot.index  # snapshots are checked on their own
                and node.log.term_at(index) != commit.entry.term
            ):
                self._fail(f"leader completeness: {node.id} (term {node.term}) lacks {commit}")
        watch.checked_commits = len(self._commit_order)

    def _fail(self, what: str) -> None:
        raise InvariantViolation(what)


class _Disk:
    """One node's durable state: written only by processing a Ready."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.entries: list[Entry] = []
        self.snapshot = Snapshot()

    def persist(
        self, hard_state: HardState | None, entries: tuple[Entry, ...], snapshot: Snapshot | None
    ) -> None:
        if snapshot is not None:
            self.snapshot, self.entries = snapshot, []
        if hard_state is not None:
            self.hard_state = hard_state
        if entries:
            del self.entries[entries[0].index - self.snapshot.index - 1 :]
            self.entries.extend(entries)

    def compact(self, snapshot: Snapshot) -> None:
        del self.entries[: snapshot.index - self.snapshot.index]
        self.snapshot = snapshot

    def load(self) -> PersistedState:
        return PersistedState(self.hard_state, tuple(self.entries), self.snapshot)


class Simulation:
    def __init__(
        self,
        seed: int,
        node_count: int,
        faults: FaultProfile | None = None,
        config: RaftConfig | None = None,
    ) -> None:
        self.seed = seed
        self.faults = faults or FaultProfile()
        self.config = config or RaftConfig()
        self.rng = random.Random(seed)
        self.ids = [f"n{number}" for number in range(node_count)]
        self.disks = {node_id: _Disk() for node_id in self.ids}
        self.nodes: dict[str, RaftNode] = {}
        self.checker = SafetyChecker()
        self.now = 0
        self.steps = 0
        self._in_flight: list[tuple[int, int, Message]] = []
        self._sequence = 0
        self._blocked: set[frozenset[str]] = set()
        self._faulty = True
        self._proposals = 0
        # Each node's simulated application state (see ``digest``), lost on a crash.
        self._applications: dict[str, int] = {}
        self._reads = 0
        # Recent events, formatted only if a check fails.
        self.trace: deque[tuple[int, object]] = deque(maxlen=30)
        for node_id in self.ids:
            self._start(node_id)

    # ---- running ----------------------------------------------------------------------------

    def run(self) -> None:
        """Faults for ``fault_ticks``, then heal and require progress; raises on a violation."""
        try:
            for _ in range(self.faults.fault_ticks):
                self._inject_faults()
                self.tick()
            self.heal()
            self._require_progress()
        except AssertionError as violation:  # InvariantViolation, or the core's own checks
            raise InvariantViolation(
                f"{violation} [seed={self.seed} nodes={len(self.ids)} tick={self.now}; "
                f"reproduce: run_schedule({self.seed}, {len(self.ids)})]\nlast events:\n  "
                + "\n  ".join(f"t{tick} {event}" for tick, event in self.trace)
            ) from None

    def tick(self) -> None:
        self.now += 1
        for node in list(self.nodes.values()):
            node.tick()
            self._after_step(node)
        self._deliver_due()
        for node in list(self.nodes.values()):
            if not self._faulty or self.rng.random() < self.faults.process_ready:
                self._process_ready(node)

    def heal(self) -> None:
        self._faulty = False
        self._blocked.clear()
        for node_id in self.ids:
            if node_id not in self.nodes:
                self._start(node_id)
        self.trace.append((self.now, "heal"))

    def leader(self) -> RaftNode | None:
        """The leader of the highest term among live leaders, if any."""
        leaders = [node for node in self.nodes.values() if node.role is Role.LEADER]
        return max(leaders, key=lambda node: node.term, default=None)

    def _require_progress(self) -> None:
        marker: tuple[str, int] | None = None
        index = 0
        for _ in range(self.faults.liveness_ticks):
            leader = self.leader()
            if leader is not None and marker != (leader.id, leader.term):
                try:
                    index = leader.propose(b"after-heal")
                    marker = (leader.id, leader.term)
                except NotLeaderError:  # a transfer in progress: try again next tick
                    marker = None
            entry = self.checker.committed_entry(index)
            if (
                marker is not None
                and entry is not None
                and entry.term == marker[1]
                and all(node.applied >= index for node in self.nodes.values())
            ):
                return
            self.tick()
        leader = self.leader()
        raise InvariantViolation(
            f"liveness: no command applied everywhere {self.faults.liveness_ticks} ticks "
            f"after the heal (leader: {leader.id if leader else None})"
        )

    # ---- faults -----------------------------------------------------------------------------

    def _inject_faults(self) -> None:
        faults, rng = self.faults, self.rng
        if rng.random() < faults.crash and self.nodes:
            # Leaders half the time: the hard cases (Raft Figure 8) need leaders to fail.
            leader = self.leader()
            self.crash(leader.id if leader and rng.random() < 0.5 else rng.choice(list(self.nodes)))
        down = [node_id for node_id in self.ids if node_id not in self.nodes]
        if down and rng.random() < faults.restart:
            self._start(rng.choice(down))
        if rng.random() < faults.repartition:
            self._repartition()
        if rng.random() < faults.compact and self.nodes:
            self.compact(rng.choice(list(self.nodes.values())))
        # Any node that believes it leads, stale ones too: they must fail safely.
        leaders = [node for node in self.nodes.values() if node.role is Role.LEADER]
        if not leaders:
            return
        leader = rng.choice(leaders)
        if rng.random() < faults.read:
            self._reads += 1
            context = f"read-{self._reads}".encode()
            self.checker.begin_read(context)
            leader.request_read(context)
            self._after_step(leader)
        if rng.random() < faults.propose:
            self._proposals += 1
            with contextlib.suppress(NotLeaderError):  # refused during a transfer
                leader.propose(f"cmd-{self._proposals}".encode())
            self._after_step(leader)
        if rng.random() < faults.transfer:
            target = rng.choice(self.ids)
            self.trace.append((self.now, f"transfer {leader.id} -> {target}"))
            leader.transfer_leadership(target)
            self._after_step(leader)

    def _repartition(self) -> None:
        ids = self.ids[:]
        self.rng.shuffle(ids)
        kind = self.rng.choice(["heal", "isolate", "split", "partial"])
        if kind == "heal":
            groups: list[list[str]] = [ids]
        elif kind == "isolate":
            groups = [ids[:1], ids[1:]]
        elif kind == "split":
            cut = self.rng.randrange(1, len(ids))
            groups = [ids[:cut], ids[cut:]]
        else:
            # Partial: ids[0] and ids[2] cannot talk; each still reaches ids[1] and the rest.
            self._blocked = {frozenset(ids[0::2][:2])}
            self.trace.append((self.now, f"partial {ids[0]} x {ids[2]}"))
            return
        self._blocked = {
            frozenset((a, b)) for group in groups for a in group for b in ids if b not in group
        }
        self.trace.append((self.now, f"partition {groups}"))

    def crash(self, node_id: str) -> None:
        del self.nodes[node_id]
        self.checker.forget(node_id)
        self.trace.append((self.now, f"crash {node_id}"))

    def compact(self, node: RaftNode) -> None:
        """The application snapshots what it applied, stores it, then lets the log go."""
        term = node.log.term_at(node.applied)
        if node.applied <= node.log.snapshot.index or term is None:
            return
        snapshot = Snapshot(node.applied, term, b"%d" % self._applications[node.id])
        self.checker.check_snapshot(node, snapshot)
        self.disks[node.id].compact(snapshot)
        node.compact(snapshot)
        self.trace.append((self.now, f"compact {node.id} to {snapshot.index}"))
        self._after_step(node)

    def _start(self, node_id: str) -> None:
        node = RaftNode(
            node_id,
            self.ids,
            random.Random(self.rng.getrandbits(64)),
            self.config,
            self.disks[node_id].load(),
        )
        self.nodes[node_id] = node
        self._applications[node_id] = int(node.log.snapshot.data or b"0")
        self.trace.append((self.now, f"start {node_id} {node.hard_state}"))
        self._after_step(node)

    # ---- network and drivers ----------------------------------------------------------------

    def _send(self, message: Message) -> None:
        copies = 1
        if self._faulty:
            if self.rng.random() < self.faults.drop:
                return
            if self.rng.random() < self.faults.duplicate:
                copies = 2
        for _ in range(copies):
            delay = self.rng.randint(0, self.faults.max_delay) if self._faulty else 1
            self._sequence += 1
            self._in_flight.append((self.now + delay, self._sequence, message))

    def _deliver_due(self) -> None:
        due = [item for item in self._in_flight if item[0] <= self.now]
        self._in_flight = [item for item in self._in_flight if item[0] > self.now]
        self.rng.shuffle(due)  # reordering within a tick, on top of random delays
        for _, _, message in due:
            node = self.nodes.get(message.recipient)
            if node is None or frozenset((message.sender, message.recipient)) in self._blocked:
                continue
            node.step(message)
            self.steps += 1
            self.trace.append((self.now, message))
            self._after_step(node)
            if not self._faulty or self.rng.random() < self.faults.process_ready:
                self._process_ready(node)
                # Also crash right after a Ready, between its persisting and what comes next.
                if self._faulty and self.rng.random() < self.faults.crash / 4:
                    self.crash(node.id)

    def _process_ready(self, node: RaftNode) -> None:
        if not node.has_ready():
            return
        ready = node.ready()
        self.disks[node.id].persist(ready.hard_state, ready.entries, ready.snapshot)
        for message in ready.messages:
            self._send(message)
        if ready.snapshot is not None:
            self.checker.check_snapshot(node, ready.snapshot)
            self._applications[node.id] = int(ready.snapshot.data or b"0")
        for entry in ready.committed_entries:
            self._applications[node.id] = digest(self._applications[node.id], entry)
        self.checker.check_applied(node, ready.committed_entries)
        self.checker.check_reads(node, ready.read_states)
        node.advance(ready)
        self._after_step(node)

    def _after_step(self, node: RaftNode) -> None:
        self.checker.check(node)


def run_schedule(seed: int, node_count: int) -> Simulation:
    """Run one seeded schedule, its faults and timeouts drawn from the seed, to the end;
    raises ``InvariantViolation`` on a broken rule."""
    rng = random.Random(f"profile-{seed}")
    simulation = Simulation(seed, node_count, FaultProfile.draw(rng), draw_config(rng))
    simulation.run()
    return simulation
