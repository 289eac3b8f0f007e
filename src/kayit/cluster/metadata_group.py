"""MetadataGroup: one node's place in the Raft group that replicates the cluster metadata.

It puts together the node's Raft state on disk (``FileStorage`` in ``<node dir>/raft``), its
identity (``kayit.cluster.identity``), the driver, the gRPC transport and the metadata machine,
and takes the decisions about membership that only the leader takes:

- a node is admitted by proposing ``NodeAdded``; the leader then adds it to the Raft
  configuration as a learner, and promotes it once it has caught up, if ``voters_wanted`` (at
  most 2T+1 voters, live ones first) says it should vote; a voter it no longer wants, such as a
  dead one whose vote a live learner took, goes back to being a learner;
- a node removed by ``NodeRemoved`` leaves the configuration;
- a node that lost its Raft state comes back under a new id at the address of its old one:
  admitting it removes the old id first (two members never share an address).

All of this runs as one loop on the leader that makes one configuration change at a time, from
what the committed metadata and the configuration say. A new leader therefore finishes what
an old one left half done (an admission, a removal) without anyone asking again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from kayit.cluster.identity import (
    ClusterFacts,
    has_raft_state,
    load_cluster_facts,
    new_cluster_id,
    node_id_in,
    store_cluster_facts,
)
from kayit.config import ConfigError
from kayit.consensus.driver import (
    DriverConfig,
    DriverStopped,
    ProposalDropped,
    RaftDriver,
    RaftStatus,
)
from kayit.consensus.file_storage import FileStorage
from kayit.consensus.membership import (
    ClusterConfig,
    ConfigChange,
    ConfigChangeError,
    ConfigChangeInProgress,
)
from kayit.consensus.messages import EntryKind, Message
from kayit.consensus.node import NotLeaderError, PersistedState, RaftConfig, RaftNode, Role
from kayit.metadata.commands import (
    AddressChanged,
    Command,
    Deleted,
    Formed,
    NodeAdded,
    NodeRemoved,
    Placed,
    PlacedItem,
    Released,
    decode,
)
from kayit.metadata.machine import MetadataMachine, MetadataView, PlacedListener
from kayit.rpc.raft_service import RaftService
from kayit.rpc.raft_transport import GrpcRaftTransport, TransportOptions
from kayit.storage.disk import FsyncPolicy
from kayit.supervision import supervise

log = logging.getLogger(__name__)

_PLACED_ITEM_BYTES = 22  # what a Placed entry spends on an item besides its id
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GroupOptions:
    raft: RaftConfig = field(default_factory=RaftConfig)
    driver: DriverConfig = field(default_factory=DriverConfig)
    transport: TransportOptions = field(default_factory=TransportOptions)
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    # A member not heard from for this long is dead when the leader chooses voters: long
    # enough that a pause under load does not hand votes around.
    dead_after: float = 5.0
    # How often the leader looks at membership when nothing was applied meanwhile (a learner
    # catching up, a member falling silent).
    duty_seconds: float = 0.1
    join_retry_seconds: float = 0.5
    # Placed entries are cut at about this size; a single call is never split.
    placed_entry_bytes: int = 1 << 20
    # Calls that queued behind an entry wait this long more before theirs is proposed, so
    # that it takes in the SETs whose copies are being stored meanwhile: under load, fewer
    # and bigger entries (each costs every voter a round of messages and a log append), for
    # a few ms more per SET. A lone call never waits: it proposes its own entry at once.
    placed_linger: float = 0.005


@dataclass(frozen=True, slots=True)
class GroupHooks:
    """What the node hears from its group, on the event loop."""

    # A Raft message arrived from this node id: it is alive.
    on_heard: Callable[[str], None] | None = None
    # The items of each applied Placed entry that took effect.
    on_placed: PlacedListener | None = None
    # The Raft driver failed (its storage could not be written) and stopped for good: this
    # node can take no further part in the cluster.
    on_failure: Callable[[BaseException], None] | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The leader's answer to a node it admitted: enough to start its Raft node."""

    cluster_id: str
    tolerance: int
    nodes: Mapping[str, str]  # every member's address, the new node's included


class NotLeading(NotLeaderError):
    """Asked of a node that does not lead; ``leader_address`` is where the leader it knows
    of can be reached."""

    def __init__(self, leader_id: str | None, leader_address: str | None) -> None:
        super().__init__(leader_id)
        self.leader_address = leader_address


class AdmissionRefused(Exception):
    """The node cannot join under this id or at this address; asking again will not help."""


# (address of a node to ask, our node id, our address) -> the leader's Admission. Raises
# NotLeading to redirect, AdmissionRefused to give up, anything else to try another node.
AskToJoin = Callable[[str, str, str], Awaitable[Admission]]

# The items, the term they must be committed in, and the caller's future.
_PlaceRequest = tuple[tuple[PlacedItem, ...], int, asyncio.Future[tuple[bool, ...]]]
_PlaceCall = tuple[tuple[PlacedItem, ...], asyncio.Future[tuple[bool, ...]]]


class MetadataGroup:
    """Made by ``open``; then exactly one of ``bootstrap``, ``join`` or ``resume``; ``stop``
    at the end. Register ``raft_service`` on the node's gRPC server before any of the three."""

    def __init__(
        self,
        raft_dir: Path,
        address: str,
        node_id: str,
        storage: FileStorage,
        persisted: PersistedState,
        facts: ClusterFacts | None,
        options: GroupOptions,
        on_change: Callable[[RaftStatus], None] | None,
        hooks: GroupHooks,
    ) -> None:
        """Use ``open``."""
        self.raft_dir = raft_dir
        self.address = address
        self.id = node_id
        self.options = options
        self._storage = storage
        self._persisted = persisted
        self._facts = facts
        self._on_change = on_change
        self._on_heard = hooks.on_heard
        self._on_failure = hooks.on_failure
        # Messages of another cluster are dropped; a node that has not joined yet knows none.
        self.raft_service = RaftService(facts.cluster_id if facts else "", self._deliver)
        self._machine = MetadataMachine(on_apply=self._on_apply, on_placed=hooks.on_placed)
        self._driver: RaftDriver | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._pulse = asyncio.Event()  # set and replaced whenever anything may have changed
        self._role_changed = asyncio.Event()
        self._leadership = RaftStatus(Role.FOLLOWER, persisted.hard_state.term, None)
        self._leading_since: float | None = None
        self._heard: dict[str, float] = {}  # peer -> when a message from it last arrived
        self._peers_seen: dict[str, str] = {}
        # Every address the metadata gave a node, kept after its removal.
        self._addresses: dict[str, str] = {}
        self._peers_changed = asyncio.Event()
        self._warned: tuple[int, int] | None = None
        self._placing: deque[_PlaceRequest] = deque()
        self._placer: asyncio.Task[None] | None = None
        self._placing_inline = False  # a caller is committing its own entry (propose_placed)
        self._barrier_waiters: list[asyncio.Future[None]] = []
        self._barriers: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        raft_dir: Path,
        address: str,
        options: GroupOptions | None = None,
        on_change: Callable[[RaftStatus], None] | None = None,
        hooks: GroupHooks | None = None,
    ) -> MetadataGroup:
        """Load the Raft state and identity in ``raft_dir`` (creating both if there are none).
        ``address``: this node's gRPC host:port, as the other nodes reach it. ``on_change`` is
        called whenever role, term or known leader change. Raises ConfigError for damage."""
        options = options or GroupOptions()
        storage = FileStorage(raft_dir, options.fsync)
        persisted = await asyncio.to_thread(storage.load)
        try:
            node_id = await asyncio.to_thread(node_id_in, raft_dir, persisted)
            facts = await asyncio.to_thread(load_cluster_facts, raft_dir, persisted)
        except BaseException:
            await asyncio.to_thread(storage.close)
            raise
        return cls(
            raft_dir,
            address,
            node_id,
            storage,
            persisted,
            facts,
            options,
            on_change,
            hooks or GroupHooks(),
        )

    # ---- becoming a member -------------------------------------------------------------------

    @property
    def is_member(self) -> bool:
        """Whether this node belongs to a cluster already (then ``resume``)."""
        return self._facts is not None

    @property
    def cluster_id(self) -> str | None:
        return self._facts.cluster_id if self._facts else None

    async def bootstrap(self, tolerance: int) -> None:
        """Form a new cluster with this node as its only voter; returns once the metadata
        says it is formed, with this node in it."""
        self._check_fresh()
        facts = ClusterFacts(new_cluster_id(), (self.id,), tolerance, {self.id: self.address})
        await asyncio.to_thread(store_cluster_facts, self.raft_dir, facts)
        self._start(facts)
        log.info(
            "forming cluster %s as node %s (TOLERANCE=%d)", facts.cluster_id, self.id, tolerance
        )
        await self._until(lambda: self.id in self.metadata.nodes)

    async def join(self, peers: Sequence[str], ask: AskToJoin) -> None:
        """Ask the nodes at ``peers`` (any of them: a follower redirects to the leader) to
        admit this node, until one does; then start, and return once the leader has added
        this node as a learner (it promotes it once caught up, if it should vote). Raises
        AdmissionRefused if the leader will never admit it."""
        self._check_fresh()
        if not peers:
            raise ValueError("no node to join through")
        admission = await self._ask_until_admitted(peers, ask)
        # From here the leader's messages reach _deliver, dropped there until the start
        # (the leader sends again) rather than refused with a warning.
        self.raft_service.cluster = admission.cluster_id
        facts = ClusterFacts(
            admission.cluster_id, (), admission.tolerance, MappingProxyType(dict(admission.nodes))
        )
        await asyncio.to_thread(store_cluster_facts, self.raft_dir, facts)
        self._start(facts)
        await self._until(lambda: self.id in self.raft_config.members)
        log.info("joined cluster %s as node %s", facts.cluster_id, self.id)

    async def resume(self) -> None:
        """Start again as the member this node was (``is_member``)."""
        if self._facts is None:
            raise ConfigError(
                f"{self.raft_dir} belongs to no cluster yet: bootstrap a cluster or join one"
            )
        self._start(self._facts)

    async def stop(self) -> None:
        """Stop as a crash would (see ``RaftDriver.stop``); the Raft state stays on disk."""
        if self._stopped:
            return
        self._stopped = True
        self._notify()
        tasks = [*self._tasks, *(task for task in (self._placer, self._barriers) if task)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for *_, future in self._placing:
            _fail(future, DriverStopped("the metadata group stopped"))
        for waiter in self._barrier_waiters:
            if not waiter.done():
                waiter.set_exception(DriverStopped("the metadata group stopped"))
        self._barrier_waiters.clear()
        self._placing.clear()
        if self._driver is not None:
            await self._driver.stop()
        await asyncio.to_thread(self._storage.close)
        self._role_changed.set()

    async def hand_over(self, timeout: float) -> str | None:
        """Before this leader stops: hand leadership to the live voter whose log is furthest
        along (Raft's TimeoutNow), so that the others need not wait out an election timeout.
        Returns the new leader's id, or None when there was nobody to hand to, this node did
        not lead, or no other node led within ``timeout`` seconds."""
        driver = self._driver
        if driver is None or self._stopped or not driver.is_leader:
            return None
        config = driver.node.cluster_config
        alive = self._alive(config.members)
        candidates = sorted(voter for voter in config.voters if voter != self.id and voter in alive)
        if not candidates:
            return None
        progress = driver.node.follower_progress()
        target = max(candidates, key=lambda voter: progress.get(voter, 0))
        driver.transfer_leadership(target)
        try:
            async with asyncio.timeout(timeout):
                while driver.is_leader or driver.leader_id is None:
                    await self.wait_for_change()
        except (TimeoutError, DriverStopped):
            return None
        return driver.leader_id

    # ---- what a node reads -------------------------------------------------------------------

    @property
    def metadata(self) -> MetadataView:
        """The metadata as applied here so far. A snapshot replaces the object: read it again
        after any await rather than keep it."""
        return self._machine.metadata

    @property
    def is_leader(self) -> bool:
        return self._driver is not None and self._driver.is_leader

    @property
    def leader_id(self) -> str | None:
        return self._driver.leader_id if self._driver else None

    @property
    def leader_address(self) -> str | None:
        leader = self.leader_id
        return None if leader is None else self._resolve(leader)

    @property
    def term(self) -> int:
        return self._driver.term if self._driver else self._persisted.hard_state.term

    @property
    def raft_config(self) -> ClusterConfig:
        """Voters and learners as this node's log has them now, committed or not."""
        return self._driver.node.cluster_config if self._driver else ClusterConfig()

    @property
    def is_voter(self) -> bool:
        return self.id in self.raft_config.voters

    @property
    def last_log(self) -> tuple[int, int]:
        """(index, term) of the last entry in this node's log: Raft's measure of how up to
        date it is (§5.4.1)."""
        if self._driver is None:
            return 0, 0
        raft_log = self._driver.node.log
        return raft_log.last_index, raft_log.last_term

    @property
    def commit_point(self) -> tuple[int, int]:
        """(index, term) of the last entry this node knows to be committed."""
        if self._driver is None:
            return 0, 0
        node = self._driver.node
        term = node.log.term_at(node.commit)
        assert term is not None, "the commit index is never compacted away"
        return node.commit, term

    def unapplied_commands(self) -> list[Command]:
        """The commands of the entries in this node's log that it has not applied yet,
        committed or not, in log order."""
        if self._driver is None:
            return []
        raft_log = self._driver.node.log
        first = self.metadata.applied_index + 1
        entries = raft_log.slice(first, raft_log.last_index - first + 1)
        return [decode(entry.data) for entry in entries if entry.kind is EntryKind.COMMAND]

    def members_in_log(self) -> set[str]:
        """The members once every entry in this node's log is applied, committed or not: a
        node admitted or removed by an entry not committed yet counts as such."""
        members = set(self.metadata.nodes)
        for command in self.unapplied_commands():
            if isinstance(command, NodeAdded):
                members.add(command.node_id)
            elif isinstance(command, NodeRemoved):
                members.discard(command.node_id)
        return members

    def holds_committed(self, index: int, term: int) -> bool:
        """Whether this node's log holds the entry another node committed at ``index`` in
        ``term``. One compacted here was committed here too: the same entry."""
        if self._driver is None:
            return index == 0
        node = self._driver.node
        if index <= node.log.snapshot.index:
            return True
        return node.log.term_at(index) == term

    @property
    def retired(self) -> bool:
        """The metadata says this node was removed: it will never be a member again."""
        return self.id in self.metadata.removed

    async def wait_for_change(self) -> RaftStatus:
        """Returns after the next change of role, term or known leader, with the state then.
        Raises DriverStopped once the group is stopped."""
        event = self._role_changed
        await event.wait()
        if self._stopped:
            raise DriverStopped("the metadata group stopped")
        return self._leadership

    # ---- the leader's side -------------------------------------------------------------------

    async def admit(self, node_id: str, address: str) -> Admission:
        """Admit ``node_id`` at ``address`` (asking twice is harmless); returns once its
        ``NodeAdded`` is committed. The leader's loop then adds it to the configuration as a
        learner; not before, so that the answer, with the cluster id the node needs to accept
        Raft messages, is usually there first. A member at the same address under another id
        is taken to be that node before it lost its Raft state, and is removed."""
        driver = self._leading_driver()
        await self._as_leader(driver.read_barrier())
        # The answer names the members' addresses, the joining node's only way to reach this
        # leader until it has caught up: this leader's own must be committed first.
        await self._until(
            lambda: self.metadata.formed and self.id in self.metadata.nodes, leading=True
        )
        if node_id in self.metadata.removed:
            raise AdmissionRefused(f"node {node_id} was removed; it may only join under a new id")
        if node_id != self.id and address == self.address:
            raise AdmissionRefused(f"{address} is the address of the leader itself")
        if self.metadata.nodes.get(node_id) != address:
            await self._record_address(node_id, address)
            log.info("admitted node %s at %s", node_id, address)
        self._notify()
        metadata = self.metadata
        return Admission(metadata.cluster_id, metadata.tolerance, dict(metadata.nodes))

    async def remove(self, node_id: str) -> None:
        """Retire ``node_id`` for good (``kayit member remove``); returns once it has left the
        committed configuration, or for this leader itself once the removal is committed in
        the metadata (it then leaves the configuration and hands leadership over). Raises
        ValueError for a node that is not a member, or whose removal would leave fewer live
        voters than a majority of those left (no leader could be elected until the dead ones
        came back)."""
        driver = self._leading_driver()
        await self._as_leader(driver.read_barrier())
        metadata = self.metadata
        config = driver.node.cluster_config
        if node_id in metadata.nodes and node_id in config.voters:
            left = config.voters - {node_id}
            alive = left & self._alive(config.members)
            if left and len(alive) <= len(left) // 2:
                raise ValueError(
                    f"removing node {node_id} would leave {len(alive)} of {len(left)} voters "
                    "alive, fewer than a majority: the cluster could not elect a leader until "
                    "the dead ones came back (remove a dead node instead)"
                )
        if node_id in metadata.nodes:
            await self._propose(NodeRemoved(node_id))
            log.info("removed node %s", node_id)
        elif node_id not in metadata.removed:
            raise ValueError(f"node {node_id} is not a member")
        self._notify()
        if node_id != self.id:
            await self._until(lambda: node_id not in self._committed_config().members, leading=True)

    async def force_new_cluster(
        self, survivors: Collection[str], adopted: Sequence[PlacedItem], above_term: int
    ) -> list[str]:
        """Make this node the only voter, and the leader, of a cluster that lost a majority
        of its voters for good (``kayit recover``; ``kayit.cluster.recovery`` checks first
        that it may): the other ``survivors`` become learners, ``adopted`` is committed to
        the index, and every member that is not a survivor is removed. Returns the removed
        ids, once the metadata here has applied it all. The leader's loop then promotes the
        survivors as they catch up, and repair makes the removed nodes' copies again.

        ``above_term``: the highest term a survivor has taken (see
        ``RaftNode.force_new_cluster``). Raises AlreadyLeading when this node leads."""
        if self._stopped or self._driver is None:
            raise DriverStopped("the metadata group is not running")
        removed = sorted(self.members_in_log() - set(survivors))
        commands = [Placed(batch).encode() for batch in self._cut(adopted)]
        commands += [NodeRemoved(node_id).encode() for node_id in removed]
        learners = set(survivors) - {self.id}
        no_op = await self._driver.force_new_cluster(learners, commands, above_term)
        log.warning(
            "forced a new configuration: this node is the only voter; learners: %s; %d "
            "copies adopted; removed for good: %s",
            ", ".join(sorted(learners)) or "none",
            len(adopted),
            ", ".join(removed) or "nobody",
        )
        await self._until(lambda: self.metadata.applied_index >= no_op)
        self._notify()
        return removed

    def _cut(self, items: Sequence[PlacedItem]) -> list[tuple[PlacedItem, ...]]:
        """``items`` in batches of about ``placed_entry_bytes``, one Placed entry each."""
        batches: list[tuple[PlacedItem, ...]] = []
        batch: list[PlacedItem] = []
        size = 0
        for item in items:
            weight = len(item.message_id) + _PLACED_ITEM_BYTES
            if batch and size + weight > self.options.placed_entry_bytes:
                batches.append(tuple(batch))
                batch, size = [], 0
            batch.append(item)
            size += weight
        if batch:
            batches.append(tuple(batch))
        return batches

    def reads_under_lease(self) -> bool:
        """Whether this node leads under its read lease now: the metadata here is then as
        current as after a ``read_barrier``, with no wait (``RaftDriver.reads_under_lease``)."""
        driver = self._driver
        return (
            not self._stopped
            and driver is not None
            and driver.is_leader
            and driver.reads_under_lease()
        )

    async def read_barrier(self) -> None:
        """Returns once the metadata here holds everything committed before the call, this
        node having confirmed that it still leads. Raises NotLeading.

        While this leader's lease holds, that costs nothing. Otherwise calls share rounds:
        every call made while a round is under way waits for the next one, which starts
        after them, so one quorum round serves a whole batch of GETs."""
        if self._leading_driver().reads_under_lease():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barrier_waiters.append(future)
        if self._barriers is None or self._barriers.done():
            self._barriers = asyncio.get_running_loop().create_task(self._barrier_rounds())
        await future

    async def _barrier_rounds(self) -> None:
        while self._barrier_waiters:
            waiters, self._barrier_waiters = self._barrier_waiters, []
            try:
                await self._as_leader(self._leading_driver().read_barrier())
            except asyncio.CancelledError:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(DriverStopped("the metadata group stopped"))
                raise
            except Exception as error:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def until_ready_to_lead(self) -> None:
        """Returns once this leader applied an entry of its own term (its no-op), so that
        its metadata is complete, and the metadata names it a member of a formed cluster (a
        founder adds itself after its first election): only then may it place copies.
        Raises NotLeading if it stops leading first."""
        term = self._leading_driver().term

        def ready() -> bool:
            metadata = self.metadata
            return metadata.last_leader_term >= term and self.id in metadata.nodes

        await self._until(ready, leading=True)

    async def propose_placed(self, items: Sequence[PlacedItem], term: int) -> tuple[bool, ...]:
        """Commit ``items`` to the index in ``term``, in which this node must lead; returns
        which of them took effect. Calls made while an entry is being committed share the
        next one, proposed ``placed_linger`` after it commits (one at a time: on a busy
        machine fewer, bigger entries cost less CPU than more entries in flight). Raises
        NotLeading when this node does not lead in ``term`` by the time the entry is appended
        (nothing was proposed), ProposalDropped when it stops leading before the entry
        commits (it may commit all the same).

        A call that finds no entry being committed commits its own in its own task: handing
        it to a task and the result back costs two turns of the loop, a good part of a lone
        SET's time on a busy machine. Calls that come meanwhile go to the task after it.

        Only the leader of a version's term may commit it, and only in that term: a later
        term's leader takes pending copies of earlier terms for abandoned."""
        driver = self._leading_driver()
        if driver.term != term:
            raise self._not_leading()
        future: asyncio.Future[tuple[bool, ...]] = asyncio.get_running_loop().create_future()
        self._placing.append((tuple(items), term, future))
        if not self._placing_inline and (self._placer is None or self._placer.done()):
            self._placing_inline = True
            try:
                await self._place_next()
            finally:
                self._placing_inline = False
                self._start_placer()
        return await future

    async def propose_deletion(self, command: Deleted | Released, term: int) -> tuple[bool, ...]:
        """Commit a DEL (``Deleted``) or its holders' letting go (``Released``) in ``term``, in
        which this node must lead, as ``propose_placed`` does; returns which parts took
        effect. Raises as ``propose_placed`` does."""
        driver = self._leading_driver()
        result = await self._as_leader(driver.propose(command.encode(), term))
        assert isinstance(result, tuple)
        return result

    # ---- internals ---------------------------------------------------------------------------

    def _check_fresh(self) -> None:
        if self._facts is not None or has_raft_state(self._persisted):
            raise ConfigError(
                f"{self.raft_dir} already holds the state of a cluster member: resume instead"
            )

    def _start(self, facts: ClusterFacts) -> None:
        if self._driver is not None or self._stopped:
            raise RuntimeError("the metadata group was started already")
        self._facts = facts
        self._peers_seen = dict(facts.peers)
        self.raft_service.cluster = facts.cluster_id
        persisted = self._persisted
        if persisted.snapshot.index:
            self._machine.restore(persisted.snapshot.data)
        node = RaftNode(
            self.id, facts.initial_voters, random.Random(), self.options.raft, persisted
        )
        transport = GrpcRaftTransport(facts.cluster_id, self._resolve, self.options.transport)
        self._driver = RaftDriver(
            node,
            self._storage,
            transport,
            self._machine,
            self.options.driver,
            on_change=self._on_leadership,
            on_failure=self._on_failure,
        )
        self._driver.start()
        self._tasks = [
            supervise("the metadata group's membership duty", partial(self._lead, self._driver)),
            supervise("the metadata group's cluster file", self._keep_facts),
        ]

    def _deliver(self, message: Message) -> None:
        self._heard[message.sender] = time.monotonic()
        if self._on_heard is not None:
            self._on_heard(message.sender)
        if self._driver is not None:
            self._driver.deliver(message)

    def _resolve(self, node_id: str) -> str | None:
        metadata = self.metadata
        driver = self._driver
        if node_id in metadata.removed and (
            driver is None or node_id not in driver.node.cluster_config.members
        ):
            return None
        # A removed node is still spoken to until it leaves the configuration: a leader that
        # removed itself needs the answers that commit its leaving.
        address = metadata.nodes.get(node_id) or self._addresses.get(node_id)
        if address is None and self._facts is not None:
            address = self._facts.peers.get(node_id)
        return address

    def _on_apply(self) -> None:
        nodes = self._machine.metadata.nodes
        self._addresses.update(nodes)
        if nodes and nodes != self._peers_seen:
            self._peers_seen = dict(nodes)
            self._peers_changed.set()
        self._notify()

    def _on_leadership(self, leadership: RaftStatus) -> None:
        self._leadership = leadership
        leading = leadership.role is Role.LEADER
        self._leading_since = time.monotonic() if leading else None
        changed, self._role_changed = self._role_changed, asyncio.Event()
        changed.set()
        self._notify()
        if self._on_change is not None:
            self._on_change(leadership)

    def _notify(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    async def _until(self, done: Callable[[], bool], *, leading: bool = False) -> None:
        """Wait until ``done()``; with ``leading``, raise NotLeading if this node stops
        leading first."""
        while not done():
            if self._stopped or self._driver is None or self._driver.failure is not None:
                raise DriverStopped("the metadata group stopped") from (
                    self._driver.failure if self._driver else None
                )
            if leading and not self._driver.is_leader:
                raise self._not_leading()
            # The pulse misses nothing that is applied; the timeout catches what is not (a
            # driver that failed).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.duty_seconds):
                    await self._pulse.wait()

    def _not_leading(self) -> NotLeading:
        return NotLeading(self.leader_id, self.leader_address)

    def _leading_driver(self) -> RaftDriver:
        if self._stopped:
            raise DriverStopped("the metadata group stopped")
        if self._driver is None or not self._driver.is_leader:
            raise self._not_leading()
        return self._driver

    async def _as_leader(self, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except NotLeading:
            raise
        except NotLeaderError:
            raise self._not_leading() from None

    async def _propose(self, command: Command) -> bool:
        """Whether the command took effect (Placed: use ``propose_placed``)."""
        result = await self._as_leader(self._leading_driver().propose(command.encode()))
        return result == (True,)

    async def _record_address(self, node_id: str, address: str) -> None:
        """Add ``node_id`` at ``address``, or move it there. A member recorded at that address
        under another id is not there any more (``node_id`` is): it is that node before it
        lost its Raft state, or a node that moved; it is removed first, as two members never
        share an address."""
        for other, other_address in list(self.metadata.nodes.items()):
            if other_address == address and other != node_id:
                log.info(
                    "node %s is now at %s, where %s was: removing %s",
                    node_id,
                    address,
                    other,
                    other,
                )
                await self._propose(NodeRemoved(other))
        known = node_id in self.metadata.nodes
        command = AddressChanged(node_id, address) if known else NodeAdded(node_id, address)
        if not await self._propose(command):
            raise AdmissionRefused(f"node {node_id} could not be recorded at {address}")

    def _committed_config(self) -> ClusterConfig:
        if self._driver is None:
            return ClusterConfig()
        node = self._driver.node
        return node.cluster_config_at(node.commit)

    async def _ask_until_admitted(self, peers: Sequence[str], ask: AskToJoin) -> Admission:
        while True:
            for peer in peers:
                target: str | None = peer
                tried: set[str] = set()
                while target is not None and target not in tried:
                    tried.add(target)
                    try:
                        return await ask(target, self.id, self.address)
                    except AdmissionRefused:
                        raise
                    except NotLeading as not_leading:
                        target = not_leading.leader_address
                    except Exception as error:  # unreachable, or lost leadership meanwhile
                        log.info("joining through %s failed: %s", target, error)
                        target = None
            await asyncio.sleep(self.options.join_retry_seconds)

    # ---- the leader's loop -------------------------------------------------------------------

    async def _lead(self, driver: RaftDriver) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.duty_seconds):
                    await self._pulse.wait()
            if driver.failure is not None:
                return
            if not driver.is_leader:
                continue
            try:
                await self._one_duty(driver)
            except (NotLeaderError, ProposalDropped, ConfigChangeInProgress):
                pass  # retried on the next round, by this leader or the next one
            except DriverStopped:
                return
            except (ConfigChangeError, AdmissionRefused) as error:
                log.warning("membership change refused: %s", error)
            except Exception:
                log.exception("the leader's membership duty failed; trying again")

    async def _one_duty(self, driver: RaftDriver) -> None:
        """Take the first step that is due, if any: finish forming the cluster, then bring
        the Raft configuration one change closer to what the metadata wants."""
        facts = self._facts
        assert facts is not None
        metadata = self.metadata
        if not metadata.formed:
            if self.id in facts.initial_voters:  # the founder, maybe restarted half way
                await self._propose(Formed(facts.cluster_id, facts.tolerance))
            return
        if self.id not in metadata.removed and metadata.nodes.get(self.id) != self.address:
            await self._record_address(self.id, self.address)  # founding, or a new address
            return
        node = driver.node
        change = self._next_change(metadata, node)
        if change is None:
            # Only once the configuration settled: not at every step of nodes joining.
            self._warn_if_few_voters(metadata.tolerance, len(node.cluster_config.voters))
            return
        log.info("membership: %s %s", change.kind.value, change.node_id)
        await driver.change_config(change)

    def _next_change(self, metadata: MetadataView, node: RaftNode) -> ConfigChange | None:
        config = node.cluster_config
        if node.log.config_index > node.commit:
            return None  # the previous change first
        for gone in sorted(config.members & metadata.removed):
            if config.voters != {gone}:
                return ConfigChange.remove(gone)
        for member in metadata.nodes:
            if member not in config.members:
                return ConfigChange.add_learner(member)
        wanted = metadata.voters_wanted(self._alive(config.members), config.voters)
        progress = node.follower_progress()
        for learner in sorted(config.learners & wanted):
            if progress.get(learner, 0) >= node.commit:
                return ConfigChange.promote(learner)
        if wanted <= config.voters:
            # Once every wanted node votes, the others step back (and are added back as
            # learners on the next round); never this leader, which would then step down.
            for extra in sorted(config.voters - wanted - {self.id}):
                return ConfigChange.remove(extra)
        return None

    def _alive(self, members: frozenset[str]) -> set[str]:
        """The members heard from lately. A new leader heard little as a follower: it counts
        everyone as alive for its first ``dead_after`` seconds."""
        now = time.monotonic()
        since = self._leading_since if self._leading_since is not None else now
        alive = {self.id}
        for member in members:
            if now - max(self._heard.get(member, since), since) < self.options.dead_after:
                alive.add(member)
        return alive

    def _warn_if_few_voters(self, tolerance: int, voters: int) -> None:
        wanted = 2 * tolerance + 1
        if voters < wanted and self._warned != (voters, tolerance):
            log.warning(
                "the metadata group has %d voter(s), fewer than 2*TOLERANCE+1 = %d: it "
                "survives fewer leader failures than TOLERANCE=%d until more nodes join",
                voters,
                wanted,
                tolerance,
            )
        self._warned = (voters, tolerance)

    async def _keep_facts(self) -> None:
        """Keep the members' addresses in the cluster file, for the next start. A write that
        fails is tried again when this task is restarted."""
        while True:
            await self._peers_changed.wait()
            facts = self._facts
            assert facts is not None
            if self._peers_seen != dict(facts.peers):
                facts = replace(facts, peers=MappingProxyType(dict(self._peers_seen)))
                await asyncio.to_thread(store_cluster_facts, self.raft_dir, facts)
                self._facts = facts
            else:
                self._peers_changed.clear()

    def _start_placer(self) -> None:
        """The task that commits the calls left waiting, if there are any and none runs."""
        if self._placing and not self._stopped and (self._placer is None or self._placer.done()):
            self._placer = asyncio.get_running_loop().create_task(self._place(), name="placed")

    async def _place(self) -> None:
        while self._placing:
            await asyncio.sleep(self.options.placed_linger)
            await self._place_next()

    async def _place_next(self) -> None:
        """Commit the next calls that share an entry, and answer them."""
        term, batch = self._take_placing()
        if not batch:
            return
        try:
            command = Placed(tuple(chain.from_iterable(items for items, _ in batch)))
            result = await self._as_leader(self._leading_driver().propose(command.encode(), term))
        except asyncio.CancelledError:
            for _, future in batch:
                _fail(future, DriverStopped("the metadata group stopped"))
            raise
        except Exception as error:
            for _, future in batch:
                _fail(future, error)
            return
        assert isinstance(result, tuple)
        start = 0
        for items, future in batch:
            if not future.done():
                future.set_result(result[start : start + len(items)])
            start += len(items)

    def _take_placing(self) -> tuple[int, list[_PlaceCall]]:
        """The next calls to share an entry: of one term, up to ``placed_entry_bytes``."""
        batch: list[_PlaceCall] = []
        term = self._placing[0][1]
        size = 0
        while self._placing:
            items, wanted_term, future = self._placing[0]
            if future.done():  # the caller gave up
                self._placing.popleft()
                continue
            weight = sum(len(item.message_id) + _PLACED_ITEM_BYTES for item in items)
            if wanted_term != term or (batch and size + weight > self.options.placed_entry_bytes):
                break
            size += weight
            batch.append((items, future))
            self._placing.popleft()
        return term, batch


def _fail(future: asyncio.Future[tuple[bool, ...]], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
