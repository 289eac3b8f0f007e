"""Leader: carries out SET and GET for clients while this node leads the metadata group.

A message lives on TOLERANCE + 1 holders, this leader first while it is alive. A SET stores
its copies (pending on each holder), then commits a ``Placed`` entry naming the holders, and
is acknowledged once that entry is applied: holders promote their pending copy when they
apply it. A GET confirms leadership (a read barrier) and reads the committed index, so it
never returns a value a newer leader has overwritten. Copies are deleted only where the
committed metadata allows it (``ClusterMetadata.copies_to_delete``). A DEL commits a
``Deleted`` entry: the id leaves the index for a tombstone naming its holders, which delete
their copies at once, or when they are next reconciled, and then release it (``Released``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from kayit.cluster.holders import HolderTransport
from kayit.cluster.membership import Membership
from kayit.cluster.metadata_group import MetadataGroup, NotLeading
from kayit.cluster.placement import choose_holders
from kayit.cluster.replicator import Replicator
from kayit.cluster.transport import (
    Copy,
    Deposed,
    MemberSlow,
    MemberTransport,
    MemberUnreachable,
)
from kayit.consensus.driver import DriverStopped, ProposalDropped
from kayit.metadata.commands import Deleted, DeletedItem, PlacedItem, Released
from kayit.metadata.index import IndexEntry
from kayit.metadata.keyspace import KeyOrder, KeyPage
from kayit.metadata.machine import MetadataView
from kayit.protocol.errors import ErrorCode
from kayit.storage.journal import checksum
from kayit.storage.store import MessageStore
from kayit.version import Version

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MemberCounts:
    node_id: str
    address: str
    alive: bool
    assigned: int  # copies the committed index places on the node
    voter: bool  # votes in the metadata group


@dataclass(frozen=True, slots=True)
class _Writing:
    done: asyncio.Future[None]
    holders: list[str]


class Deferred(Enum):
    """A GET that cannot be answered at once (``Leader.get_at_once``): it waits its turn."""

    DEFERRED = "deferred"


DEFERRED = Deferred.DEFERRED


class ClusterError(Exception):
    """The cluster cannot do what was asked: ``code`` tells a client what it may conclude,
    the message is the reason it sees."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Leader:
    def __init__(
        self,
        *,
        group: MetadataGroup,
        store: MessageStore,
        membership: Membership,
        transport: MemberTransport,
        term: int,
        store_timeout: float,
    ) -> None:
        """``membership``: the other nodes by id, alive while their Raft messages arrive.
        ``transport``: reaches them by address, carrying ``term``. ``store_timeout``: the base
        of each copy's deadline (see Replicator)."""
        self.id = group.id
        self.term = term
        self.store = store
        self.membership = membership
        self._group = group
        self.holders = HolderTransport(self.id, store, transport, self._address_of)
        self._replicator = Replicator(self.holders, store_timeout)
        self._last_seq = 0
        # The latest SET under way for each id. A GET waits for it, so a client that pipelines
        # SET then GET reads its own write; a SET of the same id goes to the same holders.
        self._writing: dict[str, _Writing] = {}
        self._under_way: Counter[str] = Counter()  # SETs and repairs of each id not finished
        self._reserved: Counter[str] = Counter()  # copies being placed on each node
        # Ids found with fewer than TOLERANCE + 1 good copies, for the Repairer.
        self.under_replicated: set[str] = set()
        self._key_order = KeyOrder()

    @property
    def metadata(self) -> MetadataView:
        return self._group.metadata

    @property
    def tolerance(self) -> int:
        return self.metadata.tolerance

    @property
    def message_count(self) -> int:
        return self.metadata.message_count

    def _address_of(self, node_id: str) -> str | None:
        return self.metadata.nodes.get(node_id)

    def alive(self) -> list[str]:
        """The members that may hold copies now: this node first, then the live others."""
        nodes = self.metadata.nodes
        others = [n for n in self.membership.alive() if n in nodes and n != self.id]
        return [self.id, *others] if self.id in nodes else others

    @property
    def leading(self) -> bool:
        """Whether this node still leads in this leader's term."""
        return self._group.is_leader and self._group.term == self.term

    async def ready(self) -> None:
        """Returns once this leader's metadata is complete and names it a member
        (``MetadataGroup.until_ready_to_lead``). Raises ClusterError(NOLEADER) if it no
        longer leads in its term."""
        if not self.leading:
            raise _no_leader()
        metadata = self.metadata
        if metadata.last_leader_term >= self.term and self.id in metadata.nodes:
            return
        try:
            await self._group.until_ready_to_lead()
        except (NotLeading, DriverStopped) as error:
            raise _no_leader() from error
        if not self.leading:
            raise _no_leader()

    # ---- SET ---------------------------------------------------------------------------------

    async def set(self, message_id: str, message: bytes) -> None:
        """Returns once TOLERANCE + 1 copies are stored and their index entry committed."""
        await self.ready()
        entry = self.metadata.entry(message_id)
        earlier = self._writing.get(message_id)
        current = earlier.holders if earlier else entry.holders if entry else ()
        alive = self.alive()
        keep = [self.id, *(h for h in current if h in alive and h != self.id)]
        wanted = self.tolerance + 1
        holders = choose_holders(self._load(), alive, wanted, keep)
        if holders is None:
            raise ClusterError(
                ErrorCode.NOREPLICAS,
                f"only {len(alive)} live nodes; TOLERANCE={self.tolerance} needs {wanted}",
            )
        writing = _Writing(asyncio.get_running_loop().create_future(), holders)
        self._writing[message_id] = writing
        self._under_way[message_id] += 1
        try:
            await self._set(Copy(message_id, message, self._next_version()), holders)
        finally:
            writing.done.set_result(None)
            if self._writing.get(message_id) is writing:
                del self._writing[message_id]
            self._settle(message_id)

    async def _set(self, copy: Copy, holders: list[str]) -> None:
        # Reserved until the commit is applied, as a repair's are: the metadata's load counts
        # the copies only from then on, and SETs placed meanwhile would pass over these nodes.
        reserved = list(holders)
        self._reserved.update(reserved)
        try:
            confirmed = await self._replicate(copy, holders, reserved)
            wanted = self.tolerance + 1
            if len(confirmed) < wanted:
                # The pending copies stored are never promoted: their version never commits.
                raise ClusterError(
                    ErrorCode.NOREPLICAS,
                    f"stored on {len(confirmed)} of {wanted} nodes; the others failed and no "
                    "live node was left to replace them",
                )
            item = PlacedItem(
                copy.message_id, copy.version, checksum(copy.message), tuple(confirmed)
            )
            await self._commit([item])
        finally:
            self._reserved.subtract(reserved)
        # Not taking effect means a newer version of the id committed first: this SET was
        # overwritten at once, which a client may not tell from one that took effect. A
        # holder removed from the cluster meanwhile is not named: repair replaces it.
        entry = self.metadata.entry(copy.message_id)
        if entry is not None and entry.version == copy.version and len(entry.holders) < wanted:
            self.under_replicated.add(copy.message_id)

    async def _commit(self, items: list[PlacedItem]) -> tuple[bool, ...]:
        try:
            return await self._group.propose_placed(items, self.term)
        except NotLeading as error:
            raise _no_leader() from error
        except (ProposalDropped, DriverStopped) as error:
            raise ClusterError(
                ErrorCode.TIMEOUT,
                "leadership was lost before the write committed; a new leader may still commit it",
            ) from error

    async def _replicate(self, copy: Copy, holders: list[str], reserved: list[str]) -> list[str]:
        """Store on every holder in parallel; a holder that fails is replaced by another live
        node while there is one, reserved (added to ``reserved``, which the caller releases).
        Returns the holders that stored the copy."""
        confirmed: list[str] = []
        tried = set(holders)
        pending = holders
        while pending:
            results = await asyncio.gather(
                *(self._store(node_id, copy) for node_id in pending),
                return_exceptions=True,
            )
            retry: list[str] = []
            for node_id, result in zip(pending, results, strict=True):
                if result is None:
                    confirmed.append(node_id)
                    continue
                if isinstance(result, Deposed):
                    raise _no_leader() from result
                if not isinstance(result, MemberUnreachable):
                    raise result
                self.member_failed(node_id, result)
                candidates = [n for n in self.alive() if n not in tried]
                replacement = choose_holders(self._load(), candidates, 1) or []
                tried.update(replacement)
                self._reserved.update(replacement)
                reserved += replacement
                retry += replacement
            pending = retry
        return confirmed

    async def _store(self, node_id: str, copy: Copy) -> None:
        """One copy to one holder. This node's own disk gets no deadline: a slow disk here
        slows every SET alike, and passing over it would only move its copies elsewhere."""
        if node_id == self.id:
            await self.holders.store_many(node_id, [copy], timeout=0)
        else:
            await self._replicator.store(node_id, copy)

    def _load(self) -> Counter[str]:
        load = Counter(self.metadata.load())
        load.update(self._reserved)
        return load

    def _next_version(self) -> Version:
        self._last_seq += 1
        return Version(self.term, self._last_seq)

    def _settled(self, message_id: str) -> bool:
        """No SET or repair of the id is under way here: its copies change no more."""
        return message_id not in self._under_way

    def _settle(self, message_id: str) -> None:
        self._under_way[message_id] -= 1
        if not self._under_way[message_id]:
            del self._under_way[message_id]

    # ---- GET ---------------------------------------------------------------------------------

    async def get(self, message_id: str) -> bytes | None:
        """The message, or None if it was never set. Raises ClusterError if no copy answers
        or this node no longer leads."""
        entry = await self._committed_entry(message_id)
        if entry is None:
            return None
        return await self._read(message_id, entry)

    def get_at_once(self, message_id: str) -> bytes | Deferred | None:
        """What ``get`` would return, without waiting, when that is possible: this leader is
        ready and leads under its read lease (so the committed index here is as current as
        after a read barrier), no SET of the id is under way here, and the copy of exactly the
        version the index names is in this node's memory. ``DEFERRED`` otherwise."""
        metadata = self.metadata
        if (
            self._group.term != self.term
            or not self._group.reads_under_lease()
            or metadata.last_leader_term < self.term
            or self.id not in metadata.nodes
            or message_id in self._writing
        ):
            return DEFERRED
        entry = metadata.entry(message_id)
        if entry is None:
            return None
        message = self.store.in_memory(message_id, entry.version, entry.checksum)
        return DEFERRED if message is None else message

    async def exists(self, message_id: str) -> bool:
        """Whether the id is set, as a GET would find it; the message is not read."""
        return await self._committed_entry(message_id) is not None

    async def _committed_entry(self, message_id: str) -> IndexEntry | None:
        """The id's entry once the SET of it under way here is done and this node is known
        to lead still (a read barrier): no newer leader can have changed it."""
        writing = self._writing.get(message_id)
        if writing is not None:
            await asyncio.shield(writing.done)
        await self._read_barrier()
        return self.metadata.entry(message_id)

    async def _read_barrier(self) -> None:
        await self.ready()
        try:
            await self._group.read_barrier()
        except (NotLeading, DriverStopped) as error:
            raise _no_leader() from error

    async def key_page(
        self, cursor: int, count: int, match: Callable[[str], bool] | None
    ) -> KeyPage:
        """One page of SCAN over the committed index (``KeyOrder``), after a read barrier."""
        await self._read_barrier()
        return self._key_order.page(self.metadata, cursor, count, match)

    async def _read(self, message_id: str, entry: IndexEntry) -> bytes:
        """The message at ``entry``'s version, from this node if it holds it, else from the
        live holders first."""
        ordered = sorted(
            entry.holders, key=lambda h: (h != self.id, not self.membership.is_alive(h))
        )
        for node_id in ordered:
            try:
                message = await self.holders.retrieve(node_id, message_id, entry.version)
            except MemberUnreachable as error:
                self.member_failed(node_id, error)
                continue
            if message is not None and checksum(message) == entry.checksum:
                return message
            if self.metadata.entry(message_id) == entry and self._settled(message_id):
                await self.lose_copy(message_id, node_id)
        raise ClusterError(
            ErrorCode.UNAVAILABLE, f"no holder of {message_id!r} answered with its current copy"
        )

    # ---- DEL ---------------------------------------------------------------------------------

    async def delete(self, message_id: str) -> bool:
        """Whether the id was set. Once this returns True, the id reads as never set; its
        holders' copies are deleted now, or when each is next reconciled (a holder that is
        down keeps the tombstone until then)."""
        entry = await self._committed_entry(message_id)
        if entry is None:
            return False
        version = self._next_version()
        (applied,) = await self._commit_deletion(Deleted((DeletedItem(message_id, version),)))
        if not applied:
            # Another DEL of the id committed first (it answers 1, this one 0), or a newer
            # SET did: this DEL came before that SET.
            return self.metadata.entry(message_id) is not None
        tomb = self.metadata.tombstone(message_id)
        if tomb is not None and tomb.version == version:  # the holders as it was deleted
            await self._let_go(message_id, version, tomb.holders)
        return True

    async def _let_go(self, message_id: str, version: Version, holders: Iterable[str]) -> None:
        """Each holder deletes its copy and releases the tombstone; one that cannot is left
        to reconciliation."""

        async def let_go(node_id: str) -> None:
            try:
                await self.holders.delete(node_id, [(message_id, version)])
            except MemberUnreachable as error:
                self.member_failed(node_id, error)
                return
            except Deposed:
                return  # the DEL is committed all the same: a later leader releases it
            with contextlib.suppress(ClusterError):  # the next reconciliation releases it
                await self._commit_deletion(Released(node_id, ((message_id, version),)))

        await asyncio.gather(*map(let_go, holders))

    async def _commit_deletion(self, command: Deleted | Released) -> tuple[bool, ...]:
        try:
            return await self._group.propose_deletion(command, self.term)
        except NotLeading as error:
            raise _no_leader() from error
        except (ProposalDropped, DriverStopped) as error:
            raise ClusterError(
                ErrorCode.TIMEOUT,
                "leadership was lost before the delete committed; a new leader may still commit it",
            ) from error

    # ---- healing -----------------------------------------------------------------------------

    async def lose_copy(self, message_id: str, node_id: str) -> None:
        """``node_id`` no longer holds a good copy of the current version: the index stops
        naming it, and the message waits for repair."""
        await self.lose_copies(node_id, [message_id])

    async def lose_copies(self, node_id: str, message_ids: list[str]) -> None:
        """``lose_copy`` for many ids of one node, in one entry."""
        items = []
        for message_id in message_ids:
            entry = self.metadata.entry(message_id)
            self.under_replicated.add(message_id)
            if entry is None or node_id not in entry.holders or len(entry.holders) == 1:
                continue  # the last holder stays named: it may come back
            holders = tuple(h for h in entry.holders if h != node_id)
            items.append(PlacedItem(message_id, entry.version, entry.checksum, holders))
        if not items:
            return
        log.warning("%s lost %d copies; repair will make them again", node_id, len(items))
        # If it fails, the next leader finds the copies missing again.
        with contextlib.suppress(ClusterError):
            await self._commit(items)

    async def repair(self, message_id: str) -> bool:
        """Copy a message whose holders are not all alive to other live nodes, so that it has
        TOLERANCE + 1 live holders again. True when it has them."""
        entry = self.metadata.entry(message_id)
        if entry is None or not self._settled(message_id):
            return entry is None  # a SET under way places the message itself
        alive = self.alive()
        survivors = [h for h in entry.holders if h in alive]
        candidates = [n for n in alive if n not in entry.holders]
        wanted = min(self.tolerance + 1 - len(survivors), len(candidates))
        if wanted <= 0:
            return len(survivors) > self.tolerance
        targets = choose_holders(self._load(), candidates, wanted) or []
        # Reserved before the first await, so that repairs running side by side spread.
        self._reserved.update(targets)
        self._under_way[message_id] += 1
        try:
            added = await self._copy_to(message_id, entry, targets)
            if not added or self.metadata.entry(message_id) != entry:
                return False
            holders = (*survivors, *added)
            item = PlacedItem(message_id, entry.version, entry.checksum, holders)
            try:
                await self._commit([item])
            except ClusterError:
                return False
            return len(holders) > self.tolerance
        finally:
            self._reserved.subtract(targets)
            self._settle(message_id)

    async def _copy_to(self, message_id: str, entry: IndexEntry, targets: list[str]) -> list[str]:
        """Store the current version on each of ``targets`` (reserved) as a committed copy;
        returns those that now hold it."""
        try:
            message = await self._read(message_id, entry)
        except ClusterError:
            return []
        copy = Copy(message_id, message, entry.version, committed=True)
        results = await asyncio.gather(
            *(self._store(node_id, copy) for node_id in targets), return_exceptions=True
        )
        added = []
        for node_id, result in zip(targets, results, strict=True):
            if result is None:
                added.append(node_id)
            elif isinstance(result, MemberUnreachable):
                self.member_failed(node_id, result)
            else:
                raise result
        return added

    async def reconcile(self, node_id: str) -> int:
        """Match a node's copies against the committed index: copies it should hold but lacks
        are lost (and repaired); committed copies the metadata lets go are deleted. Returns
        how many were deleted. Raises MemberUnreachable."""
        expected = {key: self.metadata.entry(key) for key in self.metadata.holders_on(node_id)}
        held = await self.holders.inventory(node_id, verify=True)
        try:
            # The inventory is judged against everything committed before it was taken.
            await self._group.read_barrier()
        except (NotLeading, DriverStopped) as error:
            raise _no_leader() from error
        versions = dict(held.committed)
        pending = set(held.pending)
        lost = [
            message_id
            for message_id, entry in expected.items()
            if entry is not None
            and self.metadata.entry(message_id) == entry
            and self._settled(message_id)
            and versions.get(message_id) != entry.version
            and (message_id, entry.version) not in pending
        ]
        await self.lose_copies(node_id, lost)
        surplus = [
            (message_id, version)
            for message_id, version in self.metadata.copies_to_delete(node_id, held.committed)
            if self._may_delete(message_id, version)
        ]
        if surplus:
            await self.holders.delete(node_id, surplus)
        await self._release_deleted(node_id, versions, frozenset(surplus))
        return len(surplus)

    async def _release_deleted(
        self, node_id: str, held: dict[str, Version], deleted: frozenset[tuple[str, Version]]
    ) -> None:
        """Release the tombstones naming ``node_id`` whose copy it no longer holds, with
        ``held`` its committed copies before ``deleted`` went."""
        released = tuple(
            (message_id, version)
            for message_id, version in self.metadata.tombstones_on(node_id)
            if message_id not in held or (message_id, held[message_id]) in deleted
        )
        if released:
            with contextlib.suppress(ClusterError):  # the next reconciliation tries again
                await self._commit_deletion(Released(node_id, released))

    def _may_delete(self, message_id: str, version: Version) -> bool:
        """While a SET or repair of the id is under way, only copies older than the indexed
        version may go: what it stores is of that version or newer."""
        if self._settled(message_id):
            return True
        entry = self.metadata.entry(message_id)
        return entry is not None and version < entry.version

    def held_by(self, nodes: Iterable[str]) -> frozenset[str]:
        """The ids with a copy on any of ``nodes`` (a scan of the whole index per node)."""
        return frozenset(key for node_id in nodes for key in self.metadata.holders_on(node_id))

    def member_counts(self) -> list[MemberCounts]:
        load = self.metadata.load()
        voters = self._group.raft_config.voters
        return [
            MemberCounts(
                node_id,
                address,
                self.membership.is_alive(node_id),
                load.get(node_id, 0),
                node_id in voters,
            )
            for node_id, address in self.metadata.nodes.items()
            if node_id != self.id
        ]

    def replication_backlog(self, node_id: str) -> int:
        """Bytes of copies on their way to ``node_id`` (see ``Replicator.backlog``)."""
        return self._replicator.backlog(node_id)

    def member_failed(self, node_id: str, error: MemberUnreachable) -> None:
        """A node that failed a call is dead until heard from again. One that was only slow
        is passed over for this request: whether it is dead is the failure detector's call."""
        if isinstance(error, MemberSlow) or node_id == self.id:
            return
        if self.membership.is_alive(node_id):
            log.warning("node %s failed (%s); marked dead", node_id, error)
        self.membership.mark_failed(node_id)


def _no_leader() -> ClusterError:
    return ClusterError(ErrorCode.NOLEADER, "this node no longer leads; try again")
