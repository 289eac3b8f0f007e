"""Leader: carries out SET and GET for clients, over its own copy and the members' copies."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from kayit.cluster.index import Entry, Index
from kayit.cluster.membership import Membership
from kayit.cluster.placement import choose_holders
from kayit.cluster.replicator import Replicator
from kayit.cluster.transport import Copy, MemberSlow, MemberTransport, MemberUnreachable
from kayit.protocol.errors import ErrorCode
from kayit.storage.journal import CopyRecord, checksum
from kayit.storage.store import MessageStore
from kayit.version import Version

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MemberCounts:
    address: str
    alive: bool
    assigned: int  # copies the index places on the member
    stored: int  # messages the member last reported on its disk


@dataclass(frozen=True, slots=True)
class _Writing:
    done: asyncio.Future[None]
    holders: list[str]


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
        store: MessageStore,
        membership: Membership,
        transport: MemberTransport,
        tolerance: int,
        term: int,
        store_timeout: float,
        journaled: Mapping[str, CopyRecord] = {},
        index_complete: bool = True,
    ) -> None:
        """``journaled``: the leader's own copies as its store found them at start; their
        records name the holders, so the index survives a restart of the leader.
        ``index_complete``: False when damage cost journal records, so an id the index does
        not know may still be an acknowledged message.
        ``store_timeout``: the base of each member copy's deadline (see Replicator)."""
        self.store = store
        self.index_complete = index_complete
        self.membership = membership
        self.index = Index()
        for record in journaled.values():
            self.index.reserve(record.holders)
            self.index.commit(record.message_id, record.version, record.holders, record.checksum)
        self.tolerance = tolerance
        self.term = term
        self._transport = transport
        self._replicator = Replicator(transport, store_timeout)
        self._last_version = Version(term, 0)
        # The latest SET under way for each id. A GET waits for it, so a client that pipelines
        # SET then GET reads its own write; a SET of the same id goes to the same holders.
        self._writing: dict[str, _Writing] = {}
        self._under_way: Counter[str] = Counter()  # SETs of each id not yet finished
        # Ids found with fewer than TOLERANCE good member copies, for the Repairer.
        self.under_replicated: set[str] = set()

    async def set(self, message_id: str, message: bytes) -> None:
        """Returns once the leader's copy and TOLERANCE member copies are stored."""
        alive = self.membership.alive()
        entry = self.index.get(message_id)
        earlier = self._writing.get(message_id)
        current = earlier.holders if earlier else entry.holders if entry else ()
        holders = choose_holders(
            self.index.load, alive, self.tolerance, [h for h in current if h in alive]
        )
        if holders is None:
            raise ClusterError(
                ErrorCode.NOREPLICAS,
                f"only {len(alive)} live members; TOLERANCE={self.tolerance} needs "
                f"{self.tolerance}",
            )
        writing = _Writing(asyncio.get_running_loop().create_future(), holders)
        self._writing[message_id] = writing
        self._under_way[message_id] += 1
        try:
            await self._set(message_id, message, entry, holders)
        finally:
            writing.done.set_result(None)
            if self._writing.get(message_id) is writing:
                del self._writing[message_id]
            self._under_way[message_id] -= 1
            if not self._under_way[message_id]:
                del self._under_way[message_id]

    def _settled(self, message_id: str) -> bool:
        """No SET of the id is under way: what members hold of it changes no more."""
        return message_id not in self._under_way

    async def _set(
        self, message_id: str, message: bytes, entry: Entry | None, holders: list[str]
    ) -> None:
        copy = Copy(message_id, message, self._next_version())
        self.index.reserve(holders)
        confirmed = await self._replicate(copy, holders)
        if len(confirmed) < self.tolerance:
            self.index.release(confirmed)
            await self._undo(entry, copy, confirmed)
            raise ClusterError(
                ErrorCode.NOREPLICAS,
                f"stored on {len(confirmed)} of {self.tolerance} members; the others failed "
                "and no live member was left to replace them",
            )
        # The leader's own copy goes last, so that until every member copy is stored it still
        # holds the previous value, which _undo puts back where a failed SET reached.
        try:
            await self.store.put(message_id, message, copy.version, confirmed)
        except OSError as error:
            # Whatever reached the disk fails the checksum the index keeps, so is not served.
            log.error("could not store %r on the leader's disk: %s", message_id, error)
            self.index.release(confirmed)
            await self._undo(entry, copy, confirmed)
            raise ClusterError(ErrorCode.IOERROR, "the leader could not store its copy") from error
        self.index.commit(message_id, copy.version, confirmed, checksum(message))

    async def get(self, message_id: str) -> bytes | None:
        """The message, or None if it was never set. Raises ClusterError if no copy answers."""
        writing = self._writing.get(message_id)
        if writing is not None:
            await asyncio.shield(writing.done)
        entry = self.index.get(message_id)
        if entry is None:
            return None
        return await self._read(message_id, entry)

    async def _read(self, message_id: str, entry: Entry) -> bytes:
        """The message at ``entry``'s version. The index is the only truth: a holder's copy
        counts only at exactly that version, since a newer one was never acknowledged."""
        own = await self.store.get(message_id)
        if own is not None and checksum(own) == entry.checksum:
            return own
        alive_first = sorted(entry.holders, key=lambda h: not self.membership.is_alive(h))
        for address in alive_first:
            try:
                copy = await self._transport.retrieve(address, message_id)
            except MemberUnreachable as error:
                self._member_failed(address, error)
                continue
            if copy is not None and copy.version == entry.version:
                await self._heal_own_copy(message_id, entry, copy.message, own is not None)
                return copy.message
            await self._passed_over(message_id, entry, address, copy)
        raise ClusterError(
            ErrorCode.UNAVAILABLE, f"no holder of {message_id!r} answered with its current copy"
        )

    async def _passed_over(
        self, message_id: str, entry: Entry, address: str, copy: Copy | None
    ) -> None:
        """``address`` answered without ``entry``'s version. It is reported lost only while
        the index still has that entry and no SET of the id is under way: a SET settles the
        copies itself, and a newer copy may be its own, not yet acknowledged."""
        if self.index.get(message_id) != entry or not self._settled(message_id):
            return
        await self.lose_copy(message_id, address)
        if copy is not None and copy.version > entry.version:
            # A leftover of a SET that failed. Deleted, or the copy repair sends there would
            # be refused as older, and the member would pass for a holder it is not.
            try:
                await self._transport.delete(address, [(message_id, copy.version)])
            except MemberUnreachable as error:
                self._member_failed(address, error)

    async def _heal_own_copy(
        self, message_id: str, entry: Entry, message: bytes, damaged: bool
    ) -> None:
        current = self.index.get(message_id)
        if current is None or current.version != entry.version or not self._settled(message_id):
            return  # a newer SET writes the leader's copy itself
        log.warning(
            "the leader's copy of %r was %s; restored from a member",
            message_id,
            "damaged" if damaged else "missing",
        )
        await self.store.put(message_id, message, current.version, current.holders)

    async def lose_copy(self, message_id: str, address: str) -> None:
        """``address`` no longer holds a good copy of the current version: it stops counting
        as a holder, and the message waits for repair."""
        entry = self.index.get(message_id)
        if entry is None or address not in entry.holders:
            return
        holders = tuple(h for h in entry.holders if h != address)
        await self.store.record(CopyRecord(message_id, entry.version, entry.checksum, holders))
        if self.index.get(message_id) == entry:
            self.index.reserve(holders)
            self.index.commit(message_id, entry.version, holders, entry.checksum)
        self.under_replicated.add(message_id)

    def expected_on(self, address: str) -> dict[str, Entry]:
        """The entries that place a copy on ``address``: taken before asking for its
        inventory, so that copies placed while it is read are not mistaken for lost ones."""
        return self.index.held_by({address})

    async def reconcile(
        self, address: str, expected: dict[str, Entry], held: list[tuple[str, Version]]
    ) -> int:
        """Match a member's inventory against the index, after it (re)joined. Its copies of
        the current version stay; copies the index no longer places on it, or of an older
        (or never acknowledged) version, are deleted; copies it should hold but lacks are
        repaired. Returns how many copies were deleted.

        While the index is incomplete, copies of ids it does not know are kept: they may be
        all that is left of acknowledged messages the leader forgot. It learns that it forgot
        when a member holds a copy of an unknown id with a version this leader has not issued
        (its term or later): its data directory was lost, and it started afresh at term 1."""
        surplus = []
        unknown = 0
        versions = dict(held)
        for message_id, version in held:
            entry = self.index.get(message_id)
            newer = entry is None or version > entry.version
            if newer and not self._settled(message_id):
                continue  # it may be the copy of a SET under way, which settles it
            if entry is None and self.index_complete and version > self._last_version:
                await self._memory_lost(address, message_id)
            if entry is None and not self.index_complete:
                unknown += 1
            elif entry is None or address not in entry.holders or version != entry.version:
                surplus.append((message_id, version))
        if unknown:
            log.warning(
                "member %s holds %d copies of ids the leader's index does not know; kept, "
                "since the leader's index is incomplete",
                address,
                unknown,
            )
        for message_id, entry in expected.items():
            unchanged = self.index.get(message_id) == entry
            if unchanged and versions.get(message_id) != entry.version:
                await self.lose_copy(message_id, address)
        if surplus:
            await self._transport.delete(address, surplus)
        return len(surplus)

    async def _memory_lost(self, address: str, message_id: str) -> None:
        self.index_complete = False
        await self.store.record_memory_lost()
        log.error(
            "member %s holds %r, which this leader (term %d) never wrote: the leader's data "
            "was lost. Copies of ids it does not know are kept from now on, never deleted; "
            "those ids answer NOT_FOUND until the index is rebuilt from the members",
            address,
            message_id,
            self.term,
        )

    async def _undo(self, before: Entry | None, failed: Copy, reached: list[str]) -> None:
        """Put the previous version back on its holders that a failed SET reached, so that
        they hold what the index says again. Elsewhere the failed copy stays unseen: reads
        ask only the index's holders, at its version, and reconciliation deletes it."""
        message_id = failed.message_id
        if before is None or self.index.get(message_id) != before:
            return
        restore_on = [address for address in reached if address in before.holders]
        if not restore_on:
            return
        try:
            previous = await self._read(message_id, before)
        except ClusterError:
            return
        restore = Copy(message_id, previous, before.version)
        results = await asyncio.gather(
            *(self._restore(address, failed, restore) for address in restore_on),
            return_exceptions=True,
        )
        for address, result in zip(restore_on, results, strict=True):
            if isinstance(result, MemberUnreachable):
                self._member_failed(address, result)
                if self.index.get(message_id) == before:
                    await self.lose_copy(message_id, address)
            elif isinstance(result, BaseException):
                raise result

    async def _restore(self, address: str, failed: Copy, restore: Copy) -> None:
        # A member keeps the newer of two versions: the failed copy must go first.
        await self._transport.delete(address, [(failed.message_id, failed.version)])
        await self._replicator.store(address, restore)

    def _next_version(self) -> Version:
        self._last_version = Version(self.term, self._last_version.seq + 1)
        return self._last_version

    async def repair(self, message_id: str) -> bool:
        """Copy a message whose holders are not all alive to other live members, so it has
        TOLERANCE member copies again. True when it has them."""
        entry = self.index.get(message_id)
        if entry is None or not self._settled(message_id):
            return entry is None  # a SET under way places the message itself
        alive = self.membership.alive()
        survivors = [h for h in entry.holders if h in alive]
        candidates = [a for a in alive if a not in entry.holders]
        wanted = min(self.tolerance - len(survivors), len(candidates))
        if wanted <= 0:
            return len(survivors) >= self.tolerance
        targets = choose_holders(self.index.load, candidates, wanted) or []
        # Reserved now, so that repairs running side by side spread over the members.
        self.index.reserve(targets)
        added = await self._copy_to(message_id, entry, targets)
        if self.index.get(message_id) != entry or not self._settled(message_id):
            self.index.release(added)
            return False  # a SET overtook the repair; its copies are the ones that count
        holders = survivors + added
        record = CopyRecord(message_id, entry.version, entry.checksum, tuple(holders))
        await self.store.record(record)
        if self.index.get(message_id) != entry:
            self.index.release(added)
            return False
        self.index.reserve(survivors)
        self.index.commit(message_id, entry.version, holders, entry.checksum)
        return len(holders) >= self.tolerance

    async def _copy_to(self, message_id: str, entry: Entry, targets: list[str]) -> list[str]:
        """Store the current version on each of ``targets`` (reserved); returns those that
        now hold it, releasing the others."""
        try:
            message = await self._read(message_id, entry)
        except ClusterError:
            self.index.release(targets)
            return []
        copy = Copy(message_id, message, entry.version)
        results = await asyncio.gather(
            *(self._replicator.store(address, copy) for address in targets),
            return_exceptions=True,
        )
        added = []
        for address, result in zip(targets, results, strict=True):
            if result is None:
                added.append(address)
                continue
            self.index.release([address])
            if not isinstance(result, MemberUnreachable):
                raise result
            self._member_failed(address, result)
        return added

    def member_counts(self) -> list[MemberCounts]:
        load = self.index.load
        return [
            MemberCounts(m.address, m.alive, load.get(m.address, 0), m.stored)
            for m in self.membership.view()
        ]

    async def _replicate(self, copy: Copy, holders: list[str]) -> list[str]:
        """Store on every holder (already reserved) in parallel; a holder that fails is
        replaced by another live member while there is one. Returns the members that hold the
        copy: their reservations stand, every other one is released."""
        reserved = list(holders)
        confirmed: list[str] = []
        tried = set(holders)
        pending = holders
        try:
            while pending:
                results = await asyncio.gather(
                    *(self._replicator.store(address, copy) for address in pending),
                    return_exceptions=True,
                )
                retry: list[str] = []
                for address, result in zip(pending, results, strict=True):
                    if result is None:
                        confirmed.append(address)
                        continue
                    if not isinstance(result, MemberUnreachable):
                        raise result
                    self._member_failed(address, result)
                    self.index.release([address])
                    reserved.remove(address)
                    candidates = [a for a in self.membership.alive() if a not in tried]
                    replacement = choose_holders(self.index.load, candidates, 1) or []
                    tried.update(replacement)
                    self.index.reserve(replacement)
                    reserved += replacement
                    retry += replacement
                pending = retry
        except BaseException:
            self.index.release(reserved)
            raise
        return confirmed

    def _member_failed(self, address: str, error: MemberUnreachable) -> None:
        """A member that failed a call is dead until heard from again. One that was only slow
        is passed over for this request: whether it is dead is the failure detector's call."""
        if isinstance(error, MemberSlow):
            return
        if self.membership.is_alive(address):
            log.warning("member %s failed (%s); marked dead", address, error)
        self.membership.mark_failed(address)
