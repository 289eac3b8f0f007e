"""Leader: carries out SET and GET for clients, over its own copy and the members' copies."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from itertools import count

from kayit.cluster.index import Index
from kayit.cluster.membership import Membership
from kayit.cluster.placement import choose_holders
from kayit.cluster.replicator import Replicator
from kayit.cluster.transport import Copy, MemberTransport, MemberUnreachable
from kayit.storage.store import MessageStore
from kayit.version import Version

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MemberCounts:
    address: str
    alive: bool
    assigned: int  # copies the index places on the member
    stored: int  # messages the member last reported on its disk


class ClusterError(Exception):
    """The cluster cannot do what was asked; the message is the reason a client sees."""


class Leader:
    def __init__(
        self,
        *,
        store: MessageStore,
        membership: Membership,
        transport: MemberTransport,
        tolerance: int,
        term: int,
    ) -> None:
        self.store = store
        self.membership = membership
        self.index = Index()
        self.tolerance = tolerance
        self.term = term
        self._transport = transport
        self._replicator = Replicator(transport)
        self._sequence = count(1)
        # The latest SET under way for each id: a GET waits for it, so a client that
        # pipelines SET then GET reads its own write.
        self._writing: dict[str, asyncio.Future[None]] = {}

    async def set(self, message_id: str, message: bytes) -> None:
        """Returns once the leader's copy and TOLERANCE member copies are stored."""
        done = asyncio.get_running_loop().create_future()
        self._writing[message_id] = done
        try:
            await self._set(message_id, message)
        finally:
            done.set_result(None)
            if self._writing.get(message_id) is done:
                del self._writing[message_id]

    async def _set(self, message_id: str, message: bytes) -> None:
        alive = self.membership.alive()
        entry = self.index.get(message_id)
        keep = [h for h in entry.holders if h in alive] if entry else []
        holders = choose_holders(self.index.load, alive, self.tolerance, keep)
        if holders is None:
            raise ClusterError(
                f"only {len(alive)} live members; TOLERANCE={self.tolerance} needs {self.tolerance}"
            )
        copy = Copy(message_id, message, Version(self.term, next(self._sequence)))
        self.index.reserve(holders)
        own = asyncio.ensure_future(self.store.put(message_id, message, copy.version))
        try:
            confirmed = await self._replicate(copy, holders)
        finally:
            # The leader's copy is read only while its version matches the index (see get), so
            # a SET that failed here leaves no visible trace even if this write went through.
            try:
                await own
            except OSError as error:
                log.error("could not store %r on the leader's disk: %s", message_id, error)
                own_error: OSError | None = error
            else:
                own_error = None
        if own_error is not None:
            self.index.release(confirmed)
            raise ClusterError("the leader could not store its copy")
        self.index.commit(message_id, copy.version, confirmed)

    async def get(self, message_id: str) -> bytes | None:
        """The message, or None if it was never set. Raises ClusterError if no copy answers."""
        writing = self._writing.get(message_id)
        if writing is not None:
            await asyncio.shield(writing)
        entry = self.index.get(message_id)
        if entry is None:
            return None
        if self.store.version(message_id) == entry.version:
            message = await self.store.get(message_id)
            if message is not None:
                return message
        alive_first = sorted(entry.holders, key=lambda h: not self.membership.is_alive(h))
        for address in alive_first:
            try:
                copy = await self._transport.retrieve(address, message_id)
            except MemberUnreachable as error:
                self._member_failed(address, error)
                continue
            if copy is not None and copy.version >= entry.version:
                return copy.message
        raise ClusterError(f"no holder of {message_id!r} is reachable")

    def member_counts(self) -> list[MemberCounts]:
        load = self.index.load
        return [
            MemberCounts(m.address, m.alive, load.get(m.address, 0), m.stored)
            for m in self.membership.view()
        ]

    async def _replicate(self, copy: Copy, holders: list[str]) -> list[str]:
        """Store on every holder (already reserved) in parallel; a holder that fails is
        replaced by another live member. Returns the members that hold the copy, whose
        reservations then stand; on failure every reservation of this SET is released."""
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
            if len(confirmed) < self.tolerance:
                raise ClusterError(
                    f"stored on {len(confirmed)} of {self.tolerance} members; the others "
                    "failed and no live member was left to replace them"
                )
        except BaseException:
            self.index.release(reserved)
            raise
        return confirmed

    def _member_failed(self, address: str, error: Exception) -> None:
        if self.membership.is_alive(address):
            log.warning("member %s failed (%s); marked dead", address, error)
        self.membership.mark_failed(address)
