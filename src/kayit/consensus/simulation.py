"""A seeded, deterministic simulation of a Raft cluster under faults, checking safety as it goes.

Each schedule runs ``RaftNode``s over a fake network that drops, delays (in ticks), duplicates,
reorders and partitions messages (full, majority/minority and partial: A-B and B-C up, A-C
down), crashes nodes (losing all that no Ready/advance cycle persisted yet, including messages
not yet sent) and restarts them from their simulated disk. Drivers process a node's Ready only
some of the time, so unpersisted state piles up and is lost on a crash. Applications compact
their logs into snapshots at random, so lagging nodes catch up by InstallSnapshot. Leaders,
stale ones too, are asked at random to propose, to serve reads (by ReadIndex, and under their
lease when they hold one) and to hand over.

In a ``MembershipSimulation`` the cluster starts as one bootstrapping node; the others start empty
and join when a leader adds them as learners. Leaders, stale ones too, are asked at random to add
learners, promote them and remove members (the leader itself included), while the faults above go
on. A node may lose its data directory: it comes back under a new id, as a spare to be added, and
its old id is removed through the log. Removed nodes are retired for good, at once or only after
running on for a while as they are (a removed node that missed its removal must not disturb the
rest).

``SafetyChecker`` runs after every tick, step and Ready, and raises ``InvariantViolation``:
election safety, log matching, leader completeness, state machine safety (entries and snapshots),
commit and apply monotonicity, no stale read (by ReadIndex, or under a leader's lease), and no
leader elected while an older one's lease holds; and for membership: one vote per term on disk,
every leader elected by a quorum of its own configuration's voters, every entry durable on a quorum
of its leader's voters when committed, each committed configuration one voter away from the
previous one, a leader appending a change only once its previous change and an entry of its term
are committed, only voters campaigning, a removed leader stepping down, snapshots recording the
configuration in effect at their index. After the faults stop and the network heals, a leader must
be elected and a new command applied on every member within a bounded number of ticks (liveness,
loosely).

The same seed always gives the same schedule: ``run_schedule(seed, nodes)`` (and
``run_membership_schedule(seed, nodes)``) reproduces it."""

from __future__ import annotations

import contextlib
import random
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from kayit.consensus.membership import ChangeKind, ClusterConfig, ConfigChange, ConfigChangeError
from kayit.consensus.messages import Entry, EntryKind, HardState, Message, Snapshot, VoteResponse
from kayit.consensus.node import (
    NotLeaderError,
    PersistedState,
    RaftConfig,
    RaftNode,
    ReadState,
    Ready,
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
    # Membership simulations only: a leader is asked for a configuration change, a node loses
    # its data directory, a removed node is retired (else it runs on until the heal).
    reconfigure: float = 0.0
    lose: float = 0.0
    retire: float = 0.3
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

    @classmethod
    def draw_membership(cls, rng: random.Random) -> FaultProfile:
        """A random mix as ``draw``, with configuration changes and lost data directories."""
        return cls(
            drop=rng.choice([0.0, 0.05, 0.15]),
            duplicate=rng.choice([0.0, 0.05]),
            max_delay=rng.choice([0, 2, 4]),
            crash=rng.choice([0.005, 0.02, 0.05]),
            restart=rng.choice([0.1, 0.3]),
            repartition=rng.choice([0.0, 0.03, 0.1]),
            propose=rng.choice([0.1, 0.3]),
            process_ready=rng.choice([0.3, 0.6, 0.9]),
            compact=rng.choice([0.0, 0.05, 0.3]),
            reconfigure=rng.choice([0.1, 0.3, 0.6]),
            lose=rng.choice([0.0, 0.003, 0.01]),
            retire=rng.choice([0.05, 0.3, 1.0]),
            fault_ticks=200,
        )


# No faults and every Ready processed at once: for tests that script the messages themselves.
CALM = FaultProfile(
    drop=0.0,
    duplicate=0.0,
    max_delay=0,
    crash=0.0,
    restart=0.0,
    repartition=0.0,
    propose=0.0,
    process_ready=1.0,
    transfer=0.0,
    read=0.0,
    compact=0.0,
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
    config_index: int = 0


def digest(previous: int, entry: Entry) -> int:
    """The simulated application's state: a checksum chained over the entries it applied."""
    return zlib.crc32(b"%d:%d:%s" % (entry.index, entry.term, entry.data), previous)


class SafetyChecker:
    """Raft's safety properties (Raft §5.4, Figure 3) and those of membership changes (thesis
    §4.1-4.3), checked incrementally over all nodes.

    ``initial_config`` is the configuration before the first CONFIG entry. ``stored(node_id,
    index, term)`` tells whether a node's disk holds that entry (or a snapshot past it); with
    it, each newly committed entry must be durable on a quorum of its leader's voters. Votes
    are known from ``check_persisted``."""

    def __init__(
        self,
        initial_config: ClusterConfig | None = None,
        stored: Callable[[str, int, int], bool] | None = None,
    ) -> None:
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
        # (index, configuration) of each committed CONFIG entry, after the initial one.
        self.configs: list[tuple[int, ClusterConfig]] = [(0, initial_config or ClusterConfig())]
        self._stored = stored
        # (term, voter) -> the candidate it voted for, durably.
        self._votes: dict[tuple[int, str], str] = {}

    @property
    def committed(self) -> int:
        return len(self._commits)

    @property
    def committed_config(self) -> ClusterConfig:
        return self.configs[-1][1]

    def config_at(self, index: int) -> tuple[int, ClusterConfig]:
        """The committed configuration in effect at ``index``, and its entry's index."""
        return next(item for item in reversed(self.configs) if item[0] <= index)

    def forget(self, node_id: str, persisted_term: int) -> None:
        """A crash: the next incarnation starts from its persisted state. A term that it led
        but never persisted (a single voter wins without waiting for its disk) left no trace,
        as nothing is sent before it is persisted: it may lead that term again."""
        self._watches.pop(node_id, None)
        lost_terms = {
            term
            for term, leader in self.leaders.items()
            if leader == node_id and term > persisted_term
        }
        for term in lost_terms:
            del self.leaders[term]
        if lost_terms:
            self._entries = {
                key: item for key, item in self._entries.items() if key[1] not in lost_terms
            }

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
        elif node.role is not Role.FOLLOWER and not self._may_campaign(node):
            self._fail(f"{node.id} campaigns as a {node.role.value} outside the voters")

    @staticmethod
    def _may_campaign(node: RaftNode) -> bool:
        """A voter, or a voter until an uncommitted change in its log removed it."""
        config_index = node.log.config_index
        return node.id in node.cluster_config.voters or (
            config_index > node.commit
            and node.id in node.cluster_config_at(config_index - 1).voters
        )

    def check_persisted(self, node: RaftNode, persisted: HardState, ready: Ready) -> None:
        """Once ``ready`` is persisted, as ``persisted`` on disk, and before its messages go:
        each vote granted is durable (that vote, or a later term) and one per term (§5.2)."""
        votes = [(persisted.term, persisted.voted_for)]
        for message in ready.messages:
            if isinstance(message, VoteResponse) and message.granted and not message.pre_vote:
                durable = persisted.term > message.term or (
                    persisted.term == message.term and persisted.voted_for == message.recipient
                )
                if not durable:
                    self._fail(f"{node.id} grants {message} with {persisted} on disk")
                votes.append((message.term, message.recipient))
        for term, candidate in votes:
            if candidate is None:
                continue
            voted = self._votes.setdefault((term, node.id), candidate)
            if voted != candidate:
                self._fail(f"{node.id} voted for {voted} and {candidate} in term {term}")

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
        """A snapshot is the state after applying exactly the committed entries it covers,
        and records the configuration then in effect (empty only on a node that joined and
        had not yet received a configuration)."""
        commit = self._commits.get(snapshot.index)
        if (
            commit is None
            or commit.entry.term != snapshot.term
            or snapshot.data != b"%d" % self._digests[snapshot.index]
        ):
            self._fail(f"{node.id} has a snapshot {snapshot} unlike the committed log")
        config_index, config = self.config_at(snapshot.index)
        unknown = config_index == 0 and snapshot.config == ClusterConfig()
        if snapshot.config != config and not unknown:
            self._fail(f"{node.id} has a snapshot at {snapshot.index} with config {config}")
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

    def check_lease_read(self, node: RaftNode) -> None:
        """A read that a leader serves at once under its lease, from what it committed."""
        if node.commit < self.committed:
            self._fail(
                f"stale lease read: {node.id} (term {node.term}) serves at commit "
                f"{node.commit}, {self.committed} entries are committed"
            )

    def lease_broken(self, holder: RaftNode, leader: RaftNode) -> None:
        self._fail(
            f"{leader.id} leads term {leader.term} inside the lease of {holder.id} "
            f"(term {holder.term})"
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
                if entry.kind is EntryKind.CONFIG:
                    self._commit_config(node, entry)
            elif known.entry != entry:
                self._fail(f"{node.id} committed {entry}, another node committed {known.entry}")
        if node.commit > watch.commit and watch.leader_term == node.term:
            self._check_durable(node)
        watch.commit = node.commit

    def _commit_config(self, node: RaftNode, entry: Entry) -> None:
        config = ClusterConfig.decode(entry.data)
        if len(config.voters ^ self.committed_config.voters) > 1:
            self._fail(
                f"{node.id} committed {config} at {entry.index}, after {self.committed_config}: "
                "more than one voter changed"
            )
        self.configs.append((entry.index, config))

    def _check_durable(self, node: RaftNode) -> None:
        """What a leader (or one that just stepped down as removed) commits is on the disks
        of a quorum of its voters: learners and non-members do not count (thesis §4.2.1)."""
        if self._stored is None:
            return
        term = node.log.term_at(node.commit)
        config = node.cluster_config
        holders = [v for v in sorted(config.voters) if self._stored(v, node.commit, term or 0)]
        if len(holders) < config.quorum:
            self._fail(
                f"{node.id} committed {node.commit} held only by {holders} of {config.voters}"
            )

    def _check_leader(self, node: RaftNode, watch: _Watch) -> None:
        leader = self.leaders.setdefault(node.term, node.id)
        if leader != node.id:
            self._fail(f"election safety: {leader} and {node.id} both lead term {node.term}")
        if watch.leader_term != node.term:
            watch.leader_term, watch.checked_commits = node.term, 0
            self._check_elected(node)
        if watch.config_index != node.log.config_index:
            watch.config_index = node.log.config_index
            self._check_config_change(node)
        if node.id not in node.cluster_config.members and node.log.config_index <= node.commit:
            self._fail(f"{node.id} leads on after its removal was committed")
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

    def _check_config_change(self, node: RaftNode) -> None:
        """A leader appends a configuration only once the previous one in its log, and an
        entry of its own term, are committed: one change at a time (thesis §4.3, and the fix
        to it published on raft-dev in 2015)."""
        entry = node.log.entry(node.log.config_index)
        if entry is None or entry.term != node.term:
            return  # not appended by this leader
        previous = next(
            (
                earlier.index
                for earlier in reversed(
                    node.log.entries[: entry.index - node.log.snapshot.index - 1]
                )
                if earlier.kind is EntryKind.CONFIG
            ),
            node.log.snapshot.index,
        )
        if previous > self.committed:
            self._fail(f"{node.id} appended a change at {entry.index}, {previous} uncommitted")
        if node.log.term_at(node.commit) != node.term:
            self._fail(f"{node.id} appended a change at {entry.index} before one of its term")

    def _check_elected(self, node: RaftNode) -> None:
        """A new leader holds the votes of a quorum of its configuration's voters: its own
        (not durable yet when it wins alone) and those on the others' disks."""
        config = node.cluster_config
        votes = {
            voter
            for voter in config.voters
            if voter == node.id or self._votes.get((node.term, voter)) == node.id
        }
        if len(votes) < config.quorum:
            self._fail(f"{node.id} leads term {node.term} with votes of {votes} of {config}")

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

    def holds(self, index: int, term: int) -> bool:
        if index <= self.snapshot.index:
            return True  # a snapshot covers only committed entries
        position = index - self.snapshot.index - 1
        return position < len(self.entries) and self.entries[position].term == term


class Simulation:
    # The function that replays a schedule of this kind from its seed.
    replay = "run_schedule"

    def __init__(
        self,
        seed: int,
        node_count: int,
        faults: FaultProfile | None = None,
        config: RaftConfig | None = None,
    ) -> None:
        self.seed = seed
        self.node_count = node_count
        self.faults = faults or FaultProfile()
        self.config = config or RaftConfig()
        self.rng = random.Random(seed)
        # The nodes that may run: each has a disk and is either up (in ``nodes``) or down.
        self.ids = [f"n{number}" for number in range(node_count)]
        self.disks = {node_id: _Disk() for node_id in self.ids}
        self.nodes: dict[str, RaftNode] = {}
        self.checker = SafetyChecker(self._initial_config(), self._stored)
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
        # (leader, term, read round) -> the tick the round began, for leases.
        self._round_started: dict[tuple[str, int, int], int] = {}
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
                f"{violation} [seed={self.seed} nodes={self.node_count} tick={self.now}; "
                f"reproduce: {self.replay}({self.seed}, {self.node_count})]\nlast events:\n  "
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
            if leader is not None and marker != (leader.id, leader.term) and self._settle(leader):
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
                and all(node.applied >= index for node in self._members())
            ):
                return
            self.tick()
        leader = self.leader()
        raise InvariantViolation(
            f"liveness: no command applied everywhere {self.faults.liveness_ticks} ticks "
            f"after the heal (leader: {leader.id if leader else None})"
        )

    def _settle(self, leader: RaftNode) -> bool:
        """Whether the cluster is ready for the command that proves liveness."""
        return True

    def _members(self) -> list[RaftNode]:
        """The running nodes that must apply that command."""
        return list(self.nodes.values())

    def _initial_config(self) -> ClusterConfig:
        return ClusterConfig(frozenset(self.ids))

    def _initial_voters(self, node_id: str) -> list[str]:
        return self.ids

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
        if rng.random() < faults.read and self._holds_lease(leader):
            self.trace.append((self.now, f"lease read on {leader.id}"))
            self.checker.check_lease_read(leader)
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
        # A membership simulation may be down to one or two ids.
        kind = self.rng.choice(["heal", "isolate", "split", "partial"][: len(ids) + 1])
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
        self.checker.forget(node_id, self.disks[node_id].hard_state.term)
        self.trace.append((self.now, f"crash {node_id}"))

    def compact(self, node: RaftNode) -> None:
        """The application snapshots what it applied, stores it, then lets the log go."""
        term = node.log.term_at(node.applied)
        if node.applied <= node.log.snapshot.index or term is None:
            return
        snapshot = Snapshot(
            node.applied,
            term,
            b"%d" % self._applications[node.id],
            node.cluster_config_at(node.applied),
        )
        self.checker.check_snapshot(node, snapshot)
        self.disks[node.id].compact(snapshot)
        node.compact(snapshot)
        self.trace.append((self.now, f"compact {node.id} to {snapshot.index}"))
        self._after_step(node)

    def _start(self, node_id: str) -> None:
        node = RaftNode(
            node_id,
            self._initial_voters(node_id),
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
        self.checker.check_persisted(node, self.disks[node.id].hard_state, ready)
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
        if node.role is not Role.LEADER:
            return
        # Before the round's appends are sent (at the next Ready): never later than they.
        self._round_started.setdefault((node.id, node.term, node.read_round), self.now)
        for other in self.nodes.values():
            # What a lease promises: no newer leader while it holds, committed or not.
            if other.term < node.term and self._holds_lease(other):
                self.checker.lease_broken(other, node)

    def _holds_lease(self, leader: RaftNode) -> bool:
        """The driver's lease, in ticks: every clock here runs at the same rate, and a
        voter's first tick after it heard the leader may come at once."""
        answered = leader.lease_round
        started = self._round_started.get((leader.id, leader.term, answered))
        lease_ticks = self.config.election_ticks - 1
        return answered > 0 and started is not None and self.now < started + lease_ticks

    def _stored(self, node_id: str, index: int, term: int) -> bool:
        return self.disks[node_id].holds(index, term)


# Voters are capped as a cluster of TOLERANCE 2 caps them; more members join as learners.
MAX_VOTERS = 5
# The node that starts the cluster alone; the others join it.
BOOTSTRAP = "n0"
# Clusters must grow to several voters for the changes to matter, yet also shrink.
GROWTH_BIASED_CHANGES = (
    [ChangeKind.ADD_LEARNER] * 2 + [ChangeKind.PROMOTE] * 3 + [ChangeKind.REMOVE] * 1
)


class MembershipSimulation(Simulation):
    """A cluster bootstrapped by its first node, which the others join, changing membership
    under faults (see the module's docstring)."""

    replay = "run_membership_schedule"

    def __init__(
        self,
        seed: int,
        node_count: int,
        faults: FaultProfile | None = None,
        config: RaftConfig | None = None,
    ) -> None:
        # Ids whose data directory was lost: never restarted, to be removed through the log.
        self._lost: set[str] = set()
        # Ids removed by a committed configuration: retired for good when the driver gets to it.
        self._removed: set[str] = set()
        self._configs_seen = 1
        self._next_id = node_count
        super().__init__(seed, node_count, faults, config)

    def _initial_config(self) -> ClusterConfig:
        return ClusterConfig(frozenset({BOOTSTRAP}))

    def _initial_voters(self, node_id: str) -> list[str]:
        return [node_id] if node_id == BOOTSTRAP else []

    def _inject_faults(self) -> None:
        super()._inject_faults()
        self._note_removals()
        retirable = sorted(self._removed & set(self.ids))
        if retirable and self.rng.random() < self.faults.retire:
            self._retire(self.rng.choice(retirable))
        if self.rng.random() < self.faults.lose:
            self._lose()
        if self.rng.random() < self.faults.reconfigure:
            self._reconfigure()

    def heal(self) -> None:
        super().heal()
        self._retire_removed()

    def _settle(self, leader: RaftNode) -> bool:
        """Retire removed nodes, and remove lost ones first, as the application would."""
        self._retire_removed()
        lost = sorted(leader.cluster_config.members & self._lost)
        if not lost:
            return True
        with contextlib.suppress(NotLeaderError, ConfigChangeError):
            leader.propose_config_change(ConfigChange.remove(lost[0]))
            self.trace.append((self.now, f"{leader.id} removes lost {lost[0]}"))
            self._after_step(leader)
        return False

    def _members(self) -> list[RaftNode]:
        members = self.checker.committed_config.members
        return [node for node in self.nodes.values() if node.id in members]

    def _reconfigure(self) -> None:
        """Ask a leader, stale ones too, for one change that keeps a quorum of live voters.
        Half the time a lost member is removed first, as the application would."""
        leaders = [node for node in self.nodes.values() if node.role is Role.LEADER]
        if not leaders:
            return
        leader = self.rng.choice(leaders)
        config = leader.cluster_config
        lost = sorted(config.members & self._lost)
        if lost and self.rng.random() < 0.5:
            changes = [ConfigChange.remove(node_id) for node_id in lost]
        else:
            kind = self.rng.choice(GROWTH_BIASED_CHANGES)
            changes = [ConfigChange(kind, node_id) for node_id in self._candidates(leader, kind)]
        if not changes:
            return
        change = self.rng.choice(changes)
        self.trace.append((self.now, f"{leader.id} proposes {change.kind.value} {change.node_id}"))
        with contextlib.suppress(NotLeaderError, ConfigChangeError):
            leader.propose_config_change(change)
        self._after_step(leader)

    def _candidates(self, leader: RaftNode, kind: ChangeKind) -> list[str]:
        config = leader.cluster_config
        match kind:
            case ChangeKind.ADD_LEARNER:
                return [
                    node_id
                    for node_id in self.ids
                    if node_id not in config.members and node_id not in self._removed
                ]
            case ChangeKind.PROMOTE:
                if len(config.voters) >= MAX_VOTERS:
                    return []
                # Mostly learners that caught up, as the application does; sometimes any.
                progress = leader.follower_progress()
                return [
                    node_id
                    for node_id in sorted(config.learners - self._lost)
                    if progress[node_id] >= leader.commit or self.rng.random() < 0.2
                ]
            case ChangeKind.REMOVE:
                return [
                    node_id
                    for node_id in sorted(config.members)
                    if len(config.voters - {node_id}) > 0
                    and self._keeps_quorum(config.apply(ConfigChange.remove(node_id)), self._lost)
                ]

    @staticmethod
    def _keeps_quorum(config: ClusterConfig, lost: set[str]) -> bool:
        return len(config.voters - lost) >= config.quorum

    def _lose(self) -> None:
        """A node's data directory is lost: it comes back empty, under a new id. Only a node
        without which every configuration that may yet be in effect keeps a quorum."""
        configs = self._configs_in_play()
        candidates = [
            node_id
            for node_id in self.ids
            if all(self._keeps_quorum(config, self._lost | {node_id}) for config in configs)
        ]
        if not candidates:
            return
        lost = self.rng.choice(candidates)
        if lost in self.nodes:
            self.crash(lost)
        self.ids.remove(lost)
        self._lost.add(lost)
        new_id = f"n{self._next_id}"
        self._next_id += 1
        self.ids.append(new_id)
        self.disks[new_id] = _Disk()
        self.trace.append((self.now, f"{lost} lost its data, rejoins as {new_id}"))
        self._start(new_id)

    def _configs_in_play(self) -> list[ClusterConfig]:
        """The committed configuration and those of later CONFIG entries in any log, in
        memory or on disk."""
        committed_index, committed = self.checker.configs[-1]
        logs = [node.log.entries for node in self.nodes.values()]
        logs += [self.disks[node_id].entries for node_id in self.ids]
        return [committed] + [
            ClusterConfig.decode(entry.data)
            for log in logs
            for entry in log
            if entry.kind is EntryKind.CONFIG and entry.index > committed_index
        ]

    def _note_removals(self) -> None:
        configs = self.checker.configs
        for (_, previous), (_, config) in zip(
            configs[self._configs_seen - 1 :], configs[self._configs_seen :], strict=False
        ):
            self._removed |= previous.members - config.members
        self._configs_seen = len(configs)

    def _retire_removed(self) -> None:
        self._note_removals()
        for node_id in sorted(self._removed & set(self.ids)):
            self._retire(node_id)

    def _retire(self, node_id: str) -> None:
        if node_id in self.nodes:
            self.crash(node_id)
        self.ids.remove(node_id)
        self.trace.append((self.now, f"retire {node_id}"))


def run_schedule(seed: int, node_count: int) -> Simulation:
    """Run one seeded schedule, its faults and timeouts drawn from the seed, to the end;
    raises ``InvariantViolation`` on a broken rule."""
    rng = random.Random(f"profile-{seed}")
    simulation = Simulation(seed, node_count, FaultProfile.draw(rng), draw_config(rng))
    simulation.run()
    return simulation


def run_membership_schedule(seed: int, node_count: int) -> MembershipSimulation:
    """As ``run_schedule``, for a cluster that ``node_count`` nodes join one at a time.
    Always with PreVote: without it, a removed node that missed its removal raises the term
    at every timeout and can keep the remaining voters from ever electing (thesis §4.2.3)."""
    rng = random.Random(f"membership-{seed}")
    faults = FaultProfile.draw_membership(rng)
    config = replace(draw_config(rng), pre_vote=True)
    simulation = MembershipSimulation(seed, node_count, faults, config)
    simulation.run()
    return simulation
