"""The Raft consensus core of one node as a pure state machine (no I/O, no clock, no asyncio).

A driver owns the I/O. It feeds the node time (``tick``), messages from peers (``step``) and
commands (``propose``), then asks for a ``Ready``: what to make durable, what to send, what to
apply. The contract, in order, for each Ready:

1. persist ``snapshot`` (if not None: it replaces the whole persisted log), ``hard_state`` (if
   not None) and ``entries`` (replacing any persisted entries from ``entries[0].index`` on)
   in one durable write, fsynced;
2. only then send ``messages`` (any order, any transport; losing some is fine);
3. restore the application from ``snapshot`` if any, apply ``committed_entries`` in order,
   then serve each of ``read_states`` once the application has applied up to its index;
4. call ``advance(ready)``. Only one Ready is outstanding at a time.

Steps 2 and 3, both after step 1, may come in either order: no message depends on the
application, nor the application on a message.

The application compacts the log on its own schedule: it makes a snapshot of what it applied,
stores it durably, drops the persisted entries it covers, then calls ``compact(snapshot)``.

Reads still pending when the node stops leading are dropped: the driver fails them when
``role`` is no longer LEADER (and retries at the new leader).

Step 1 before step 2 is what makes a vote, or an acknowledged append, survive a crash (Raft
Figure 2, "Persistent state ... updated on stable storage before responding to RPCs"). A node is
restarted from exactly what step 1 wrote (``PersistedState``); everything else is lost.

Rules implemented: Raft (Ongaro & Ousterhout 2014) §5.1-§5.4; PreVote (Ongaro's thesis §9.6);
CheckQuorum and ignoring votes while a leader is live (thesis §6.2, §4.2.3); leadership transfer
with TimeoutNow (thesis §3.10); ReadIndex reads and the rounds a lease is founded on (thesis
§6.4, §6.4.1; ``lease_round``); log compaction with snapshots
(Raft §7); membership changes one node at a time through the log, with learners (thesis §4.1-4.3,
see ``kayit.consensus.membership``). Outside Raft's rules, and only for a cluster that lost a
majority of its voters for good: ``force_new_cluster``.

Membership. A node's configuration is that of the latest CONFIG entry in its log, else its
snapshot's, else the ``voters`` it was constructed with (used only while nothing is persisted):
a cluster is bootstrapped by one node started with ``voters=[itself]``; a node joining an
existing cluster starts with no voters and learns its configuration from the leader. Only voters
campaign; only voters' votes and acknowledgements count for elections, commits, CheckQuorum and
ReadIndex. Any node answers a vote request on Raft's rules alone, whatever its own configuration
says (thesis §4.1): a learner promoted by an entry it has not received yet must still be able to
vote. A leader removed from the configuration leads on, not counting itself, until the removal
commits; then it steps down, handing over to a caught-up voter if there is one.

A node that joined learns its configuration from the first CONFIG entry or snapshot it receives:
for the entries before the cluster's first CONFIG entry it knows only the empty configuration,
which its snapshots there record. That makes no node campaign, and is superseded by the next
CONFIG entry replicated to it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from kayit.consensus.log import RaftLog
from kayit.consensus.membership import (
    ClusterConfig,
    ConfigChange,
    ConfigChangeInProgress,
)
from kayit.consensus.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    Snapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class RaftConfig:
    # The election timeout is drawn from [election_ticks, 2 * election_ticks) (Raft §5.2).
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_append: int = 64
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")


@dataclass(frozen=True, slots=True)
class PersistedState:
    """What a node wrote through its Ready/advance cycles: all it keeps across a crash."""

    hard_state: HardState = field(default_factory=HardState)
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot = field(default_factory=Snapshot)


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...] = ()
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read asked with ``request_read(context)`` may be served once the application has
    applied up to ``index``: leadership was confirmed after the request (thesis §6.4)."""

    context: bytes
    index: int


@dataclass(slots=True)
class _PendingRead:
    context: bytes
    read_round: int
    confirmed_by: set[str]


class AlreadyLeading(Exception):
    """``force_new_cluster`` was asked of a leader: its cluster can elect leaders still."""


class NotLeaderError(Exception):
    """Proposals go to the leader; ``leader_id`` is the leader this node knows of, if any."""

    def __init__(self, leader_id: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id


@dataclass(slots=True)
class _Progress:
    """The leader's view of one follower (Raft Figure 2's nextIndex and matchIndex)."""

    next: int
    match: int = 0
    # Probing: the match point is unknown, so one append at a time. Otherwise appends are sent
    # optimistically (next moves on send) and a refusal falls back to probing.
    probing: bool = True
    paused: bool = False
    recent_active: bool = False
    # The latest read round this follower answered (see ``RaftNode.lease_round``).
    read_round: int = 0


class RaftNode:
    def __init__(
        self,
        node_id: str,
        voters: Iterable[str],
        rng: random.Random,
        config: RaftConfig | None = None,
        persisted: PersistedState | None = None,
        applied: int | None = None,
    ) -> None:
        """``voters``: the cluster configuration while nothing persisted says otherwise
        (``[node_id]`` to bootstrap a cluster, none to join one). ``applied``: how far the
        application's own durable state got, if it keeps one; by default it restarts from the
        persisted snapshot."""
        state = persisted or PersistedState()
        self.id = node_id
        self.config = config or RaftConfig()
        self._rng = rng
        snapshot = state.snapshot
        if snapshot.index == 0:
            # The configuration before any entry: the one given, as nothing was persisted.
            snapshot = replace(snapshot, config=ClusterConfig(frozenset(voters)))
        self.log = RaftLog(state.entries, snapshot)
        self.term = state.hard_state.term
        self.voted_for = state.hard_state.voted_for
        self.commit = state.hard_state.commit
        # Committed entries up to here were handed to the application in a Ready.
        self.applied = state.snapshot.index if applied is None else applied
        if not state.snapshot.index <= self.applied <= self.commit:
            raise ValueError(f"applied {self.applied} is outside the snapshot and commit")
        self._pending_snapshot: Snapshot | None = None
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self._persisted = state.hard_state
        self._messages: list[Message] = []
        self._outstanding: Ready | None = None
        self._votes: dict[str, bool] = {}
        self._read_round = 0
        # A follower's last successful answer: leader, term, match index and read round.
        self._answered: tuple[str, int, int, int] | None = None
        self._reads: list[_PendingRead] = []
        self._read_states: list[ReadState] = []
        self._progress: dict[str, _Progress] = {}
        self._transferee: str | None = None
        self._transfer_elapsed = 0
        # Set once this leader sent TimeoutNow: its target may then be elected at once.
        self._lease_forfeited = False
        # Until its first election timeout a restarted node ignores votes as if it still
        # heard a leader: it may have answered a leader's round just before it went down, and
        # that leader's lease counts on it.
        self._quiet_after_start = True
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._random_timeout()

    # ---- the driver's interface -------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._timeout and self._promotable:
            self._start_election(transfer=False)

    def campaign(self) -> None:
        """Start an election now instead of at the election timeout: for a node that is the
        only voter, which has nobody to wait for."""
        if self.role is not Role.LEADER and self._promotable:
            self._start_election(transfer=False)

    def step(self, message: Message) -> None:
        if message.recipient != self.id:
            return
        if message.term > self.term and not self._take_higher_term(message):
            return
        if message.term < self.term:
            self._answer_stale(message)
            return
        match message:
            case VoteRequest():
                self._on_vote_request(message)
            case VoteResponse():
                self._on_vote_response(message)
            case AppendRequest():
                self._on_append_request(message)
            case AppendResponse():
                self._on_append_response(message)
            case InstallSnapshot():
                self._on_install_snapshot(message)
            case TimeoutNow():
                if self.role is not Role.LEADER and self._promotable:
                    self._start_election(transfer=True)

    def propose(self, data: bytes) -> int:
        """Append a command to the leader's log; returns its index (committed once it comes
        back in a Ready's committed_entries)."""
        if self.role is not Role.LEADER or self._transferee is not None:
            raise NotLeaderError(None if self.role is Role.LEADER else self.leader_id)
        self.log.append(Entry(self.log.last_index + 1, self.term, data))
        self._broadcast_append()
        return self.log.last_index

    def propose_config_change(self, change: ConfigChange) -> int:
        """Append the configuration after ``change`` to the leader's log; it takes effect at
        once (thesis §4.1) and its index is returned. Raises NotLeaderError, ConfigChangeError
        for a change that does not fit, and ConfigChangeInProgress while the previous change,
        or any entry of this term, is not committed: one change at a time keeps every two
        majorities overlapping (thesis §4.3), and a new leader's log may still hold a change
        that a later leader will overwrite (the fix published on raft-dev in 2015)."""
        if self.role is not Role.LEADER or self._transferee is not None:
            raise NotLeaderError(None if self.role is Role.LEADER else self.leader_id)
        if self.log.config_index > self.commit:
            raise ConfigChangeInProgress(
                f"the change at index {self.log.config_index} is not committed yet"
            )
        if self.log.term_at(self.commit) != self.term:
            raise ConfigChangeInProgress(f"no entry of term {self.term} is committed yet")
        config = self.cluster_config.apply(change)
        self.log.append(
            Entry(self.log.last_index + 1, self.term, config.encode(), EntryKind.CONFIG)
        )
        self._track_members()
        self._broadcast_append()
        return self.log.last_index

    @property
    def cluster_config(self) -> ClusterConfig:
        """The configuration in effect: the latest in the log, committed or not."""
        return self.log.config

    def cluster_config_at(self, index: int) -> ClusterConfig:
        """The configuration a snapshot up to ``index`` must record (``Snapshot.config``)."""
        return self.log.config_at(index)

    def follower_progress(self) -> dict[str, int]:
        """On the leader, how far each other member's log is known to match its own (learners
        included, to decide when one has caught up); empty elsewhere."""
        return {peer: progress.match for peer, progress in self._progress.items()}

    def compact(self, snapshot: Snapshot) -> None:
        """Forget the entries up to ``snapshot.index``, which the application has applied and
        stored durably as ``snapshot`` (Raft §7); followers behind it get the snapshot."""
        if snapshot.index > self.applied:
            raise ValueError(f"snapshot {snapshot.index} is past what was applied")
        self.log.compact(snapshot)

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to ``target`` once its log is complete (thesis §3.10); proposals are
        refused meanwhile, and the attempt lapses after an election timeout."""
        if (
            self.role is not Role.LEADER
            or target == self.id
            or target not in self.cluster_config.voters
        ):
            return
        self._transferee = target
        self._transfer_elapsed = 0
        self._send_timeout_now_if_caught_up(target)

    def force_new_cluster(
        self, learners: Iterable[str], commands: Sequence[bytes], above_term: int = 0
    ) -> int:
        """Make this node the only voter of its cluster, and its leader, for a cluster that
        lost a majority of its voters for good (``kayit recover``). Returns the index of the
        new leader's no-op: once it commits, everything before it has.

        In one step: take term T = max(term, ``above_term``) + 1; append in T one COMMAND
        entry per ``commands``, then a CONFIG entry with this node as the only voter and
        ``learners`` (the other survivors) as learners; then campaign, which the only voter
        wins at once, in T + 1, appending its no-op. Nothing is sent, and nothing commits,
        before the Ready that persists it all. The commands are the first entries of term T:
        a node drops its pending copies of terms older than the last entry it applied, and
        must not drop one that a command adopts before it applies that command.

        Raft cannot make this safe in general: the entries only the lost voters held are
        overruled, and one of them that came back under its id could be elected with a log
        that contradicts this one. The caller removes them for good (``NodeRemoved`` among
        the commands). Among the survivors it is safe once the caller has checked that
        - ``above_term`` is the highest term any survivor has taken: none holds an entry of
          term T, so none takes an entry of ours for one of its own (log matching, Raft
          §5.3), and the entries of theirs that conflict with this log are truncated when
          ours arrive;
        - this log holds every survivor's commit point (its index, with its term): no
          survivor is asked to drop an entry it committed, or applied;
        - the survivors are no majority of the voters: no other survivor can be elected, in
          T + 1 or later, while this node leads.
        Raises AlreadyLeading when this node leads."""
        if self.role is Role.LEADER:
            raise AlreadyLeading(f"node {self.id} leads in term {self.term}")
        self._become_follower(max(self.term, above_term) + 1, None)
        for data in commands:
            self.log.append(Entry(self.log.last_index + 1, self.term, data))
        config = ClusterConfig(frozenset({self.id}), frozenset(learners) - {self.id})
        self.log.append(
            Entry(self.log.last_index + 1, self.term, config.encode(), EntryKind.CONFIG)
        )
        self._become_candidate(transfer=False)
        assert self.leader_id == self.id, "the only voter wins its election at once"
        return self.log.last_index

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for, self.commit)

    @property
    def read_round(self) -> int:
        """The leader's latest read round. A new one starts with every heartbeat and every
        ``request_read``; the appends sent after it carry it, and followers echo it."""
        return self._read_round

    @property
    def lease_round(self) -> int:
        """The latest read round that a quorum of voters answered, or 0 when this node may
        not found a lease on one: it does not lead, has no entry of its term committed, or
        offered leadership to another node in this term.

        Each voter that answered round r followed this leader after r began, and then ignores
        votes for an election timeout of its own (CheckQuorum). So no other leader can be
        elected until an election timeout after r began: the driver turns that into a lease,
        less a margin for clock drift, in which reads need no round of their own."""
        if (
            self.role is not Role.LEADER
            or self._lease_forfeited
            or self.log.term_at(self.commit) != self.term
            or not self.config.check_quorum
        ):
            return 0
        config = self.cluster_config
        answered = sorted(
            (
                self._read_round if voter == self.id else self._progress[voter].read_round
                for voter in config.voters
            ),
            reverse=True,
        )
        return answered[config.quorum - 1]

    def request_read(self, context: bytes) -> None:
        """ReadIndex (thesis §6.4): confirm leadership with a heartbeat round started now; a
        ReadState for ``context`` comes in a later Ready. ``context`` should be unique."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        self._read_round += 1
        self._reads.append(_PendingRead(context, self._read_round, {self.id}))
        for peer, progress in self._progress.items():
            # A heartbeat at what is known to match (or at the sentinel if compacted since): it
            # succeeds without disturbing replication.
            known = progress.match if self.log.term_at(progress.match) is not None else 0
            self._send(
                AppendRequest(
                    sender=self.id,
                    recipient=peer,
                    term=self.term,
                    prev_log_index=known,
                    prev_log_term=self.log.term_at(known) or 0,
                    entries=(),
                    leader_commit=min(self.commit, known),
                    read_round=self._read_round,
                )
            )
        self._release_reads()

    def has_ready(self) -> bool:
        return bool(
            self._messages
            or self.hard_state != self._persisted
            or self.log.stable_index < self.log.last_index
            or self.applied < self.commit
            or self._read_states
            or self._pending_snapshot
        )

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RuntimeError("advance() the previous Ready first")
        hard_state = self.hard_state
        ready = Ready(
            hard_state=None if hard_state == self._persisted else hard_state,
            entries=self.log.unstable(),
            messages=tuple(self._messages),
            committed_entries=self.log.slice(self.applied + 1, self.commit - self.applied),
            read_states=tuple(self._read_states),
            snapshot=self._pending_snapshot,
        )
        self._pending_snapshot = None
        self._messages.clear()
        self._read_states.clear()
        self._outstanding = ready
        return ready

    def advance(self, ready: Ready) -> None:
        if ready is not self._outstanding:
            raise RuntimeError("advance() takes the Ready last returned by ready()")
        self._outstanding = None
        if ready.hard_state is not None:
            self._persisted = ready.hard_state
        if ready.entries:
            last = ready.entries[-1]
            self.log.stable_to(last.index, last.term)
        if ready.committed_entries:
            # max: a snapshot installed since this Ready was made may have moved it further.
            self.applied = max(self.applied, ready.committed_entries[-1].index)
        # The leader counts its own copy only once it is durable (thesis §10.2.1).
        if self.role is Role.LEADER and self._maybe_commit():
            self._broadcast_append()
            self._step_down_if_removed()

    # ---- terms and elections ----------------------------------------------------------------

    def _take_higher_term(self, message: Message) -> bool:
        """Adopt a newer term seen in ``message`` (Raft §5.1); False to drop the message."""
        if isinstance(message, VoteRequest):
            # A node that heard from a live leader within the minimum election timeout ignores
            # votes, so a partitioned node cannot depose it (thesis §4.2.3, §6.2).
            if self._in_leader_lease() and not message.transfer:
                return False
            if message.pre_vote:
                return True  # a pre-vote changes nothing at the receiver (thesis §9.6)
        elif isinstance(message, VoteResponse) and message.pre_vote and message.granted:
            return True  # carries the term the pre-candidate asked about, not a newer one
        from_leader = isinstance(message, AppendRequest | InstallSnapshot | TimeoutNow)
        leader = message.sender if from_leader else None
        self._become_follower(message.term, leader)
        return True

    def _answer_stale(self, message: Message) -> None:
        """Refuse a message of an older term with our term, so its sender catches up."""
        match message:
            case AppendRequest():
                self._send(
                    AppendResponse(
                        sender=self.id,
                        recipient=message.sender,
                        term=self.term,
                        success=False,
                        rejected_index=message.prev_log_index,
                        last_index=self.log.last_index,
                    )
                )
            case InstallSnapshot():
                self._send(
                    AppendResponse(
                        sender=self.id, recipient=message.sender, term=self.term, success=False
                    )
                )
            case VoteRequest():
                self._reply_vote(message, granted=False)
            case _:
                pass

    def _in_leader_lease(self) -> bool:
        return (
            self.config.check_quorum
            and (self.leader_id is not None or self._quiet_after_start)
            and self._election_elapsed < self.config.election_ticks
        )

    def _start_election(self, *, transfer: bool) -> None:
        if self.config.pre_vote and not transfer:
            self._reset(self.term)
            self.role = Role.PRE_CANDIDATE
            self._request_votes(self.term + 1, pre_vote=True, transfer=False)
        else:
            self._become_candidate(transfer=transfer)

    def _become_candidate(self, *, transfer: bool) -> None:
        self._reset(self.term + 1)
        self.role = Role.CANDIDATE
        self.voted_for = self.id
        self._request_votes(self.term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, *, pre_vote: bool, transfer: bool) -> None:
        voters = self.cluster_config.voters
        if self.id in voters:  # else it campaigns only while its removal is uncommitted
            self._votes[self.id] = True
        for voter in sorted(voters):  # sorted: the same order in every process
            if voter != self.id:
                self._send(
                    VoteRequest(
                        sender=self.id,
                        recipient=voter,
                        term=term,
                        last_log_index=self.log.last_index,
                        last_log_term=self.log.last_term,
                        pre_vote=pre_vote,
                        transfer=transfer,
                    )
                )
        self._tally()

    def _on_vote_request(self, request: VoteRequest) -> None:
        # One vote per term (Raft §5.2); a pre-vote for a later term binds nothing.
        free = self.voted_for == request.sender or (
            self.voted_for is None and self.leader_id is None
        )
        free = free or (request.pre_vote and request.term > self.term)
        # Only for a log at least as up to date as ours (Raft §5.4.1).
        granted = free and self.log.is_up_to_date(request.last_log_index, request.last_log_term)
        if granted and not request.pre_vote:
            self.voted_for = request.sender
            self._election_elapsed = 0
        self._reply_vote(request, granted=granted)

    def _reply_vote(self, request: VoteRequest, *, granted: bool) -> None:
        # A granted pre-vote echoes the proposed term; anything else carries ours.
        term = request.term if granted and request.pre_vote else self.term
        self._send(
            VoteResponse(
                sender=self.id,
                recipient=request.sender,
                term=term,
                granted=granted,
                pre_vote=request.pre_vote,
            )
        )

    def _on_vote_response(self, response: VoteResponse) -> None:
        if self.role is Role.PRE_CANDIDATE and response.pre_vote:
            expected = self.term + 1 if response.granted else self.term
        elif self.role is Role.CANDIDATE and not response.pre_vote:
            expected = self.term
        else:
            return
        if response.term == expected and response.sender in self.cluster_config.voters:
            self._votes.setdefault(response.sender, response.granted)
            self._tally()

    def _tally(self) -> None:
        votes = self._votes.values()
        if sum(votes) >= self._quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._become_candidate(transfer=False)
            else:
                self._become_leader()
        elif len(votes) - sum(votes) >= self._quorum:
            self._become_follower(self.term, None)

    @property
    def _quorum(self) -> int:
        return self.cluster_config.quorum

    @property
    def _promotable(self) -> bool:
        """Voters campaign, and so does a voter whose removal is not committed yet: the other
        voters may not have the removal, yet need its vote, which it gives only to a log as up
        to date as its own. It counts votes by the configuration that removes it, as it leads
        by it (thesis §4.2.2) until the removal commits."""
        config, config_index = self.cluster_config, self.log.config_index
        if self.id in config.voters:
            return True
        return config_index > self.commit and self.id in self.log.config_at(config_index - 1).voters

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.voted_for = None
        self.leader_id = None
        self._votes = {}
        self._progress = {}
        self._reads = []
        self._transferee = None
        self._lease_forfeited = False
        self._quiet_after_start = False
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._random_timeout()

    def _random_timeout(self) -> int:
        return self._rng.randrange(self.config.election_ticks, 2 * self.config.election_ticks)

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        self._track_members()
        self._read_round += 1  # a round of this term's own, for the lease
        # Commit an entry of the new term at once: only that commits earlier ones (§5.4.2).
        self.log.append(Entry(self.log.last_index + 1, self.term, kind=EntryKind.NO_OP))
        self._broadcast_append()

    def _track_members(self) -> None:
        """Replicate to exactly the other members of the configuration now in effect."""
        members = self.cluster_config.members - {self.id}
        for gone in self._progress.keys() - members:
            del self._progress[gone]
        for new in sorted(members - self._progress.keys()):  # the same order in every process
            self._progress[new] = _Progress(next=self.log.last_index + 1)

    # ---- replication ------------------------------------------------------------------------

    def _tick_leader(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_recently_active():
                self._become_follower(self.term, None)  # CheckQuorum (thesis §6.2)
                return
            for progress in self._progress.values():
                progress.recent_active = False
        self._transfer_elapsed += 1
        if self._transfer_elapsed >= self.config.election_ticks:
            self._transferee = None  # a transfer that did not finish in time lapses
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            for progress in self._progress.values():
                progress.paused = False
            self._read_round += 1  # every heartbeat renews the lease
            self._broadcast_append()

    def _quorum_recently_active(self) -> bool:
        active = {peer for peer, progress in self._progress.items() if progress.recent_active}
        return len((active | {self.id}) & self.cluster_config.voters) >= self._quorum

    def _broadcast_append(self) -> None:
        for peer in self._progress:
            self._send_append(peer)

    def _send_append(self, peer: str) -> None:
        progress = self._progress[peer]
        if progress.probing and progress.paused:
            return
        prev_index = progress.next - 1
        if prev_index < self.log.snapshot.index:
            self._send_snapshot(peer, progress)
            return
        prev_term = self.log.term_at(prev_index)
        assert prev_term is not None, "next index is past the leader's log"
        entries = self.log.slice(progress.next, self.config.max_entries_per_append)
        self._send(
            AppendRequest(
                sender=self.id,
                recipient=peer,
                term=self.term,
                prev_log_index=prev_index,
                prev_log_term=prev_term,
                entries=entries,
                leader_commit=self.commit,
                read_round=self._read_round,
            )
        )
        if progress.probing:
            progress.paused = True
        elif entries:
            progress.next = entries[-1].index + 1

    def _send_snapshot(self, peer: str, progress: _Progress) -> None:
        """The entries this follower needs are compacted: send the snapshot (Raft §7)."""
        self._send(
            InstallSnapshot(
                sender=self.id, recipient=peer, term=self.term, snapshot=self.log.snapshot
            )
        )
        progress.probing, progress.paused = True, True

    def _follow(self, leader: str) -> None:
        if self.role is not Role.FOLLOWER or self.leader_id != leader:
            self._become_follower(self.term, leader)
        self._election_elapsed = 0

    def _on_install_snapshot(self, message: InstallSnapshot) -> None:
        if self.role is Role.LEADER:
            return  # another leader in our term: impossible while election safety holds
        self._follow(message.sender)
        snapshot = message.snapshot
        if snapshot.index > self.commit:
            if self.log.term_at(snapshot.index) != snapshot.term:
                # Our log does not hold what the snapshot covers: replace it all.
                self.log.restore(snapshot)
                self.applied = snapshot.index
                self._pending_snapshot = snapshot
            self.commit = snapshot.index
        # Our log matches the leader's up to the commit index (leader completeness, §5.4).
        self._answered = None
        self._send(
            AppendResponse(
                sender=self.id,
                recipient=message.sender,
                term=self.term,
                success=True,
                match_index=self.commit,
            )
        )

    def _on_append_request(self, request: AppendRequest) -> None:
        if self.role is Role.LEADER:
            return  # another leader in our term: impossible while election safety holds
        self._follow(request.sender)
        if request.prev_log_index < self.log.snapshot.index:
            # What precedes our snapshot is committed, hence in the leader's log as in ours.
            self._send(
                AppendResponse(
                    sender=self.id,
                    recipient=request.sender,
                    term=self.term,
                    success=True,
                    match_index=self.commit,
                    read_round=request.read_round,
                )
            )
            return
        # Log matching (Raft §5.3): accept only after the entry preceding the new ones.
        if self.log.term_at(request.prev_log_index) != request.prev_log_term:
            self._answered = None  # the leader now probes: the next success is news to it
            self._send(
                AppendResponse(
                    sender=self.id,
                    recipient=request.sender,
                    term=self.term,
                    success=False,
                    rejected_index=request.prev_log_index,
                    last_index=self.log.last_index,
                    read_round=request.read_round,
                )
            )
            return
        self.log.merge(request.entries, self.commit)
        last_new = request.prev_log_index + len(request.entries)
        # Beyond last_new our log may still differ from the leader's: commit no further.
        self.commit = max(self.commit, min(request.leader_commit, last_new))
        answer = (request.sender, self.term, last_new, request.read_round)
        if not request.entries and answer == self._answered:
            # Only the commit index is new (the leader tells it at once): the answer would
            # repeat the last one. A lost one is made up for by the next heartbeat's round.
            return
        self._answered = answer
        self._send(
            AppendResponse(
                sender=self.id,
                recipient=request.sender,
                term=self.term,
                success=True,
                match_index=last_new,
                read_round=request.read_round,
            )
        )

    def _on_append_response(self, response: AppendResponse) -> None:
        progress = self._progress.get(response.sender)
        if self.role is not Role.LEADER or progress is None:
            return
        progress.recent_active = True
        progress.read_round = max(progress.read_round, response.read_round)
        self._confirm_reads(response.sender, response.read_round)
        if not response.success:
            if response.last_index < progress.match:
                # It lost entries it had acknowledged: its disk dropped writes not yet synced
                # (fsync everysec and a machine crash). Without this its refusals would all be
                # taken for stale ones, and it would never catch up.
                progress.match = response.last_index
            elif response.rejected_index <= progress.match:
                return  # refusal of an append older than what we know matches
            progress.next = max(
                progress.match + 1, min(response.rejected_index, response.last_index + 1)
            )
            progress.probing, progress.paused = True, False
            self._send_append(response.sender)
            return
        if response.match_index > progress.match:
            progress.match = response.match_index
            progress.probing, progress.paused = False, False
        progress.next = max(progress.next, progress.match + 1)
        committed = self._maybe_commit()
        if committed:
            self._broadcast_append()
            self._step_down_if_removed()
        elif progress.next <= self.log.last_index:
            self._send_append(response.sender)
        if self._transferee is not None and (committed or response.sender == self._transferee):
            self._send_timeout_now_if_caught_up(self._transferee)

    def _maybe_commit(self) -> bool:
        """Advance the commit index to the highest index stored on a quorum, but only to an
        entry of the current term: older ones commit with it, never by count (Raft §5.4.2)."""
        config = self.cluster_config
        matches = sorted(
            (
                self.log.stable_index if voter == self.id else self._progress[voter].match
                for voter in config.voters
            ),
            reverse=True,
        )
        candidate = matches[config.quorum - 1]
        if candidate > self.commit and self.log.term_at(candidate) == self.term:
            self.commit = candidate
            self._release_reads()
            return True
        return False

    def _confirm_reads(self, peer: str, read_round: int) -> None:
        """An answer to round r shows ``peer`` still followed us after every read up to r."""
        for read in self._reads:
            if read.read_round > read_round:
                break
            read.confirmed_by.add(peer)
        self._release_reads()

    def _release_reads(self) -> None:
        # The commit index is only known to be complete once an entry of this term is
        # committed (thesis §6.4 step 1); earlier reads are confirmed by at least as many.
        if self.log.term_at(self.commit) != self.term:
            return
        while (
            self._reads
            and len(self._reads[0].confirmed_by & self.cluster_config.voters) >= self._quorum
        ):
            self._read_states.append(ReadState(self._reads.pop(0).context, self.commit))

    def _step_down_if_removed(self) -> None:
        """Once the configuration without this leader is committed, stop leading (thesis
        §4.2.2), after waking up a voter that has the whole log, so that it need not wait for
        an election timeout."""
        if self.id in self.cluster_config.members or self.log.config_index > self.commit:
            return
        caught_up = [
            peer
            for peer in sorted(self.cluster_config.voters)
            if self._progress[peer].match == self.log.last_index
        ]
        if caught_up:
            self._offer_leadership(caught_up[0])
        self._become_follower(self.term, None)

    def _send_timeout_now_if_caught_up(self, target: str) -> None:
        """Once the target holds every entry, and every entry is committed: a proposal still
        uncommitted when the term changes is dropped (its client told the outcome is
        unknown), although the target would commit it; none comes in meanwhile."""
        if self._progress[target].match < self.log.last_index:
            self._send_append(target)
        elif self.commit == self.log.last_index:
            self._offer_leadership(target)

    def _offer_leadership(self, target: str) -> None:
        # TimeoutNow's target is elected without waiting out anyone's lease: ours ends here.
        self._lease_forfeited = True
        self._send(TimeoutNow(sender=self.id, recipient=target, term=self.term))

    def _send(self, message: Message) -> None:
        self._messages.append(message)
