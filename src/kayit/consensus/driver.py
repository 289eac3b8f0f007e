"""Runs a ``RaftNode`` with real I/O: a clock, a transport, durable storage and the
application's state machine.

One task owns the node. Each round it feeds the node everything that arrived since the last
round (ticks, messages, proposals, reads), then processes one Ready as the contract in
``kayit.consensus.node`` says: persist (in the storage thread), send, apply, advance. Whatever
arrives while a Ready is being persisted waits for the next round, so proposals that arrive
together share one durable write, and their appends to each peer go out merged as one.

Storage calls block, so they run on one dedicated thread, in order, never on the event loop;
except a save that the storage says does not block (``save_blocks``: an append left to a later
fsync, which is a write into the page cache), made on the loop: on a busy machine the two
hand-offs to the thread and back cost many times the write itself, and a follower makes one per
append it answers. Either way every storage call is finished before the next begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from kayit.consensus.membership import ConfigChange, ConfigChangeError
from kayit.consensus.messages import AppendRequest, Entry, EntryKind, Message, Snapshot
from kayit.consensus.node import AlreadyLeading, NotLeaderError, RaftNode, Ready, Role
from kayit.consensus.storage import RaftStorage

log = logging.getLogger(__name__)


class StateMachine(Protocol):
    """The application that committed commands are applied to, the same on every node.

    A machine whose ``applies_every_entry`` attribute is True is given the NO_OP and CONFIG
    entries too, for state that follows terms or indexes (their results are not used)."""

    def apply(self, entry: Entry) -> object:
        """Apply a committed COMMAND entry (or any entry: see ``applies_every_entry``); the
        result goes to whoever proposed a command. It must depend only on the state and the
        entry: every node applies the same entries."""
        ...

    def snapshot(self) -> Callable[[], bytes]:
        """The state after everything applied so far, taken at this call; calling the result
        encodes it, on any thread, while entries go on being applied (a big state takes long
        to encode, and the loop must not stall for it)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        ...


class RaftTransport(Protocol):
    def send(self, message: Message) -> None:
        """Queue ``message`` for its recipient without blocking; it may be lost."""
        ...

    async def close(self) -> None: ...


# What RaftNode.force_new_cluster takes: learners, commands, and the term to go above.
_NewCluster = tuple[frozenset[str], tuple[bytes, ...], int]


class ProposalDropped(Exception):
    """The proposal will not be answered: this node stopped leading, or stopped, before it
    committed. A later leader may still commit it or replace it: retry only what is
    idempotent, or find out first."""

    def __init__(self, index: int) -> None:
        super().__init__(f"the proposal at index {index} was dropped: leadership lost")
        self.index = index


class DriverStopped(Exception):
    """The driver was stopped, or failed (``__cause__``: a storage error, say)."""


@dataclass(frozen=True, slots=True)
class RaftStatus:
    role: Role
    term: int
    leader_id: str | None


@dataclass(frozen=True, slots=True)
class DriverConfig:
    # A node's election timeout is RaftConfig.election_ticks of these (10 by default: ~1 s).
    tick_seconds: float = 0.1
    # Compact the log after this many entries applied since the last snapshot, plus a share
    # of it up to compact_jitter drawn anew each time: the nodes apply the same entries at
    # about the same moment, and a compaction slows its node a little (its snapshot is encoded
    # beside the loop), so they had better not all slow down at once.
    compact_every: int = 10_000
    compact_jitter: float = 0.5
    # How often to call the storage's optional sync() (the everysec fsync policy).
    sync_seconds: float = 1.0
    # Incoming messages waiting for the node; more are dropped (Raft tolerates loss).
    inbox_limit: int = 10_000
    # How much faster than ours another node's clock may run: the read lease is cut by this
    # fraction, so that a follower's election timeout never ends inside it.
    clock_drift: float = 0.1


@dataclass(slots=True)
class _Waiter:
    """A proposal or read waiting for its outcome, under the term in which it was made."""

    term: int
    future: asyncio.Future[object]
    read_index: int | None = None


class RaftDriver:
    def __init__(
        self,
        node: RaftNode,
        storage: RaftStorage,
        transport: RaftTransport,
        machine: StateMachine,
        config: DriverConfig | None = None,
        on_change: Callable[[RaftStatus], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        """``node`` is built from ``storage.load()``, and ``machine`` already holds the state
        up to ``node.applied`` (restored from the persisted snapshot, or its own). ``on_change``
        is called on the loop whenever role, term or known leader change; ``on_failure`` once,
        if the driver fails (its storage, say) and stops for good."""
        self.node = node
        self.config = config or DriverConfig()
        self._storage = storage
        self._transport = transport
        self._machine = machine
        self._apply_every_entry = getattr(machine, "applies_every_entry", False) is True
        self._on_change = on_change
        self._on_failure = on_failure
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raft-disk-{node.id}")
        self._wakeup = asyncio.Event()
        self._tick_due = False
        self._inbox: list[Message] = []
        self._to_propose: list[tuple[bytes, int | None, asyncio.Future[object]]] = []
        self._to_read: list[tuple[bytes, asyncio.Future[object]]] = []
        self._to_change: list[tuple[ConfigChange, asyncio.Future[object]]] = []
        self._to_transfer: list[str] = []
        self._to_force: list[tuple[_NewCluster, asyncio.Future[object]]] = []
        self._proposals: dict[int, _Waiter] = {}
        self._reads: dict[bytes, _Waiter] = {}
        self._read_contexts = itertools.count()
        # When each read round began (time.monotonic), and until when the lease holds.
        self._round_started: dict[int, float] = {}
        self._lease_until = 0.0
        self._lease_term = 0
        # A voter ignores votes until the election_ticks-th tick after it heard the leader; the
        # first of those ticks may come at once.
        self._lease_seconds = (
            self.config.tick_seconds
            * (node.config.election_ticks - 1)
            * (1 - self.config.clock_drift)
        )
        self._leadership = self._current()
        self._changed = asyncio.Event()
        self._unsynced = False
        self._tasks: list[asyncio.Task[None]] = []
        # A snapshot being encoded and stored beside the loop; while the storage thread
        # compacts, every save goes to that thread too, after it.
        self._compaction: asyncio.Task[None] | None = None
        self._compacting = False
        self._jitter = random.Random(node.id)  # nodes differ; a run can be repeated
        self._compact_after = self._next_compaction()
        # Stopped: no new calls (after stop(), or a failure); closed: stop() has run.
        self._stopped = False
        self._closed = False
        self.failure: BaseException | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"raft-{self.node.id}"),
            loop.create_task(self._ticker(), name=f"raft-tick-{self.node.id}"),
        ]

    async def stop(self) -> None:
        """Stop at once, as a crash would, except that what the storage thread is writing is
        finished first. Pending proposals fail with ProposalDropped, other calls with
        DriverStopped."""
        if self._closed:
            return
        self._closed = self._stopped = True
        tasks = [*self._tasks, *([self._compaction] if self._compaction is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(DriverStopped("the raft driver stopped"))
        await self._transport.close()
        await asyncio.to_thread(self._disk.shutdown)

    # ---- what the node's role is -------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def role(self) -> Role:
        return self.node.role

    @property
    def term(self) -> int:
        return self.node.term

    @property
    def leader_id(self) -> str | None:
        return self.node.leader_id

    @property
    def is_leader(self) -> bool:
        return self.node.role is Role.LEADER

    async def wait_for_change(self) -> RaftStatus:
        """Returns after the next change of role, term or known leader, with the state then."""
        self._check_running()
        await self._changed.wait()
        self._check_running()
        return self._leadership

    # ---- the application's interface ---------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """A message from a peer (the transport's receiving side calls this)."""
        if len(self._inbox) < self.config.inbox_limit:
            self._inbox.append(message)
            self._wakeup.set()

    async def propose(self, data: bytes, term: int | None = None) -> object:
        """Commit ``data`` as a command; returns what ``apply`` returned for it on this node.
        Raises NotLeaderError (with the leader known) when this node does not lead, or, with
        ``term``, does not lead in that term when the entry is appended; and ProposalDropped
        when it stops leading before the command commits."""
        self._check_running()
        if not self.is_leader or (term is not None and self.term != term):
            raise NotLeaderError(self.leader_id)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._to_propose.append((data, term, future))
        self._wakeup.set()
        return await future

    async def change_config(self, change: ConfigChange) -> None:
        """Commit ``change`` to the cluster configuration; returns once it is committed.
        Raises what ``propose`` raises, ConfigChangeError for a change that does not fit the
        configuration in effect, and ConfigChangeInProgress while the previous change (or the
        first entry of this term) is not committed yet: retry then."""
        self._check_running()
        if not self.is_leader:
            raise NotLeaderError(self.leader_id)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._to_change.append((change, future))
        self._wakeup.set()
        await future

    def reads_under_lease(self) -> bool:
        """Whether state read now is not stale without a round of its own: this node leads
        under a lease (see ``RaftNode.lease_round``) and has applied all it committed.

        The lease is measured from when the confirming round *began*, on the monotonic clock,
        so it runs out during a pause of this process as during any other: a leader that was
        stopped and resumed serves nothing under it until a quorum answers a new round."""
        node = self.node
        return (
            time.monotonic() < self._lease_until
            and node.lease_round > 0
            and node.applied >= node.commit
        )

    async def read_barrier(self) -> None:
        """Returns once this node has applied everything committed before the call, having
        confirmed that it still leads, by its lease or else by a round with a quorum
        (ReadIndex): state read after it is not stale. Raises NotLeaderError when it does not
        lead, or stops leading meanwhile."""
        self._check_running()
        if not self.is_leader:
            raise NotLeaderError(self.leader_id)
        if self.reads_under_lease():
            return
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._to_read.append((b"%d" % next(self._read_contexts), future))
        self._wakeup.set()
        await future

    def transfer_leadership(self, target: str) -> None:
        """Ask the node to hand leadership to ``target``; watch ``wait_for_change`` for it."""
        self._check_running()
        self._to_transfer.append(target)
        self._wakeup.set()

    async def force_new_cluster(
        self, learners: Iterable[str], commands: Sequence[bytes], above_term: int
    ) -> int:
        """Take ``RaftNode.force_new_cluster``'s step in the loop (see there, and what the
        caller must check first); returns the index of the new leader's no-op, which commits
        once persisted. Raises AlreadyLeading when this node leads."""
        self._check_running()
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._to_force.append(((frozenset(learners), tuple(commands), above_term), future))
        self._wakeup.set()
        index = await future
        assert isinstance(index, int)
        return index

    # ---- the loop ----------------------------------------------------------------------------

    async def _ticker(self) -> None:
        # Ticks missed while the loop was busy or the process paused are not made up for: time
        # in which nothing could be heard must not count as silence from the leader.
        while True:
            await asyncio.sleep(self.config.tick_seconds)
            self._tick_due = True
            self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sync = loop.time() + self.config.sync_seconds
        if self.node.cluster_config.voters == {self.node.id}:
            self.node.campaign()  # the only voter: no leader to wait for
            self._wakeup.set()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                self._feed()
                self._renew_lease()
                self._notice_changes()
                if self.node.has_ready():
                    await self._process(self.node.ready())
                    self._wakeup.set()  # advance() may have left more to do
                self._maybe_compact()
                if self._unsynced and loop.time() >= next_sync:
                    await self._sync()
                    next_sync = loop.time() + self.config.sync_seconds
        except Exception as error:
            log.exception("raft driver of %s failed", self.node.id)
            self.failure = error
            self._stopped = True
            stopped = DriverStopped("the raft driver failed")
            stopped.__cause__ = error
            self._fail_all(stopped)
            if self._on_failure is not None:
                self._on_failure(error)

    def _feed(self) -> None:
        node = self.node
        if self._tick_due:
            self._tick_due = False
            node.tick()
        inbox, self._inbox = self._inbox, []
        for message in inbox:
            node.step(message)
        for target in self._to_transfer:
            node.transfer_leadership(target)
        self._to_transfer.clear()
        for data, term, future in self._to_propose:
            if future.done():
                continue  # the caller gave up
            try:
                if term is not None and node.term != term:
                    raise NotLeaderError(node.leader_id)
                index = node.propose(data)
            except NotLeaderError as error:
                _fail(future, error)
                continue
            self._proposals[index] = _Waiter(node.term, future)
        self._to_propose.clear()
        for change, future in self._to_change:
            if future.done():
                continue
            try:
                index = node.propose_config_change(change)
            except (NotLeaderError, ConfigChangeError) as error:
                _fail(future, error)
                continue
            self._proposals[index] = _Waiter(node.term, future)
        self._to_change.clear()
        for context, future in self._to_read:
            try:
                node.request_read(context)
            except NotLeaderError as error:
                _fail(future, error)
                continue
            self._reads[context] = _Waiter(node.term, future)
        self._to_read.clear()
        for (learners, commands, above_term), future in self._to_force:
            if future.done():
                continue
            try:
                future.set_result(node.force_new_cluster(learners, commands, above_term))
            except AlreadyLeading as error:
                future.set_exception(error)
        self._to_force.clear()

    async def _process(self, ready: Ready) -> None:
        if ready.snapshot is not None or ready.hard_state is not None or ready.entries:
            save_blocks: Callable[..., bool] | None = getattr(self._storage, "save_blocks", None)
            durable = (ready.hard_state, ready.entries, ready.snapshot)
            if not self._compacting and save_blocks is not None and not save_blocks(*durable):
                self._storage.save(*durable)
            else:
                await self._on_disk(self._storage.save, *durable)
            self._unsynced = True
        # Sending and applying do not depend on each other. A follower's messages are answers
        # its leader waits for: they go first. A leader's proposers wait for the apply, and
        # resuming them before the senders' writes spares them a turn of the loop behind those.
        leading = self.node.role is Role.LEADER
        if not leading:
            self._send(ready.messages)
        if ready.snapshot is not None:
            self._machine.restore(ready.snapshot.data)
        for entry in ready.committed_entries:
            self._apply(entry)
        if leading:
            self._send(ready.messages)
        for state in ready.read_states:
            read = self._reads.get(state.context)
            if read is not None:
                read.read_index = state.index
        self.node.advance(ready)
        self._release_reads()

    def _send(self, messages: Sequence[Message]) -> None:
        for message in coalesce(messages):
            self._transport.send(message)

    def _renew_lease(self) -> None:
        """Note when each read round began, and extend the lease to an election timeout
        (less the drift margin) after the start of the latest round a quorum answered."""
        node = self.node
        if node.role is not Role.LEADER or node.term != self._lease_term:
            self._round_started.clear()
            self._lease_until = 0.0
            self._lease_term = node.term
            if node.role is not Role.LEADER:
                return
        # Noted before _process sends the round's appends: never later than any of them.
        self._round_started.setdefault(node.read_round, time.monotonic())
        answered = node.lease_round
        started = self._round_started.get(answered)
        if started is None:
            return
        self._lease_until = max(self._lease_until, started + self._lease_seconds)
        for old in [round_ for round_ in self._round_started if round_ < answered]:
            del self._round_started[old]

    def _apply(self, entry: Entry) -> None:
        result: object = None
        error: Exception | None = None
        if entry.kind is EntryKind.COMMAND or self._apply_every_entry:
            try:
                result = self._machine.apply(entry)
            except Exception as raised:
                # apply is deterministic: every node raised the same, and the log goes on.
                log.warning("applying entry %d raised %r", entry.index, raised)
                error = raised
        if entry.kind is not EntryKind.COMMAND:
            # A configuration change took effect whatever the machine made of its entry.
            result, error = None, None
        proposal = self._proposals.pop(entry.index, None)
        if proposal is None or proposal.future.done():
            return
        if proposal.term != entry.term:
            # Another leader's entry took its place. Proposals of an old term are failed when
            # the term changes, before any later Ready: this only guards that rule.
            proposal.future.set_exception(ProposalDropped(entry.index))
        elif error is not None:
            proposal.future.set_exception(error)
        else:
            proposal.future.set_result(result)

    def _release_reads(self) -> None:
        applied = self.node.applied
        for context, read in list(self._reads.items()):
            if read.read_index is not None and read.read_index <= applied:
                del self._reads[context]
                if not read.future.done():
                    read.future.set_result(None)

    def _notice_changes(self) -> None:
        leadership = self._current()
        if leadership == self._leadership:
            return
        self._leadership = leadership
        self._fail_old_terms()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._on_change is not None:
            try:
                self._on_change(leadership)
            except Exception:
                log.exception("on_change callback failed")

    def _fail_old_terms(self) -> None:
        """What was asked of a leader that no longer leads in its term will not be answered."""
        leading = self.node.term if self.is_leader else None
        for index, proposal in list(self._proposals.items()):
            if proposal.term != leading:
                del self._proposals[index]
                _fail(proposal.future, ProposalDropped(index))
        for context, read in list(self._reads.items()):
            if read.term != leading:
                del self._reads[context]
                _fail(read.future, NotLeaderError(self.node.leader_id))

    def _maybe_compact(self) -> None:
        compaction = self._compaction
        if compaction is not None:
            if not compaction.done():
                return
            self._compaction = None
            compaction.result()  # a failed compaction fails the driver, as a failed save does
        node = self.node
        applied = node.applied
        if applied - node.log.snapshot.index < self._compact_after:
            return
        term = node.log.term_at(applied)
        if term is None or applied > node.log.stable_index:
            return
        covered = Snapshot(
            index=applied, term=term, data=b"", config=node.cluster_config_at(applied)
        )
        self._compaction = asyncio.get_running_loop().create_task(
            self._compact(covered, self._machine.snapshot()), name=f"raft-compact-{node.id}"
        )
        self._compact_after = self._next_compaction()

    def _next_compaction(self) -> int:
        """Entries applied past the snapshot after which the next compaction starts."""
        every = self.config.compact_every
        return every + int(every * self.config.compact_jitter * self._jitter.random())

    async def _compact(self, covered: Snapshot, encode: Callable[[], bytes]) -> None:
        """Encode the state taken at ``covered.index`` on a thread, store it on the storage
        thread and drop the entries it covers, while the loop goes on with new ones: on a big
        index this takes seconds, and a stalled loop would fail every write meanwhile."""
        try:
            began = time.monotonic()
            snapshot = replace(covered, data=await asyncio.to_thread(encode))
            if self.node.log.snapshot.index >= snapshot.index:
                return  # a leader's snapshot replaced the log meanwhile
            encoded = time.monotonic()
            self._compacting = True
            try:
                await self._on_disk(self._storage.compact, snapshot)
            finally:
                self._compacting = False
            if self.node.log.snapshot.index < snapshot.index:
                self.node.compact(snapshot)
            log.info(
                "log compacted up to entry %d: a snapshot of %.1f MB, encoded in %.2f s and "
                "stored in %.2f s",
                snapshot.index,
                len(snapshot.data) / 1e6,
                encoded - began,
                time.monotonic() - encoded,
            )
        finally:
            self._wakeup.set()  # the loop collects the outcome

    async def _sync(self) -> None:
        sync: Callable[[], None] | None = getattr(self._storage, "sync", None)
        self._unsynced = False
        if sync is not None:
            await self._on_disk(sync)

    async def _on_disk(self, call: Callable[..., None], *args: object) -> None:
        await asyncio.get_running_loop().run_in_executor(self._disk, call, *args)

    # ---- helpers -----------------------------------------------------------------------------

    def _current(self) -> RaftStatus:
        return RaftStatus(self.node.role, self.node.term, self.node.leader_id)

    def _check_running(self) -> None:
        if self._stopped:
            raise DriverStopped("the raft driver is stopped") from self.failure

    def _fail_all(self, stopped: DriverStopped) -> None:
        for index, proposal in self._proposals.items():
            _fail(proposal.future, ProposalDropped(index))
        self._proposals.clear()
        for read in self._reads.values():
            _fail(read.future, stopped)
        self._reads.clear()
        waiting = [
            *(future for *_, future in self._to_propose),
            *(future for _, future in self._to_read),
            *(future for _, future in self._to_change),
            *(future for _, future in self._to_force),
        ]
        for future in waiting:
            _fail(future, stopped)
        self._to_propose.clear()
        self._to_read.clear()
        self._to_change.clear()
        self._to_force.clear()
        self._changed.set()


def _fail(future: asyncio.Future[object], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def coalesce(messages: Sequence[Message]) -> list[Message]:
    """Merge each append that continues the previous one to the same peer into it, as one
    append carrying both: the leader sends one append per proposal, and a peer handles the
    merged one exactly as it would the two in a row, answering once."""
    merged: list[Message] = []
    runs: dict[int, list[AppendRequest]] = {}  # position in merged -> the appends merged there
    latest_run: dict[str, int] = {}  # recipient -> position of its run that may still grow
    for message in messages:
        position = latest_run.get(message.recipient)
        if isinstance(message, AppendRequest):
            if position is not None and _continues(runs[position][-1], message):
                runs[position].append(message)
                continue
            latest_run[message.recipient] = len(merged)
            runs[len(merged)] = [message]
        else:
            latest_run.pop(message.recipient, None)  # keep the order around other messages
        merged.append(message)
    for position, run in runs.items():
        if len(run) > 1:
            first, last = run[0], run[-1]
            merged[position] = AppendRequest(
                sender=last.sender,
                recipient=last.recipient,
                term=last.term,
                prev_log_index=first.prev_log_index,
                prev_log_term=first.prev_log_term,
                entries=tuple(itertools.chain.from_iterable(append.entries for append in run)),
                leader_commit=last.leader_commit,
                read_round=last.read_round,
            )
    return merged


def _continues(append: AppendRequest, then: AppendRequest) -> bool:
    last_term = append.entries[-1].term if append.entries else append.prev_log_term
    return (
        then.term == append.term
        and then.prev_log_index == append.prev_log_index + len(append.entries)
        and then.prev_log_term == last_term
        and then.leader_commit >= append.leader_commit
        and then.read_round >= append.read_round
    )
