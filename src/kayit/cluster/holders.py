"""HolderTransport: the holders of a message, by node id. The leader is a holder like any
other: its own copies go to its store directly, the others' over the network to the address
the metadata gives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kayit.cluster.transport import Copy, Held, MemberTransport, MemberUnreachable
from kayit.storage.store import MessageStore
from kayit.version import Version


class HolderTransport:
    """A MemberTransport whose addresses are node ids."""

    def __init__(
        self,
        own_id: str,
        store: MessageStore,
        remote: MemberTransport,
        address_of: Callable[[str], str | None],
    ) -> None:
        self._own_id = own_id
        self._store = store
        self._remote = remote
        self._address_of = address_of

    def _address(self, node_id: str) -> str:
        address = self._address_of(node_id)
        if address is None:
            raise MemberUnreachable(f"node {node_id} is not a member")
        return address

    async def store_many(self, node_id: str, copies: list[Copy], timeout: float) -> None:
        """``timeout`` bounds the call to another node; this node's own store has none."""
        if node_id != self._own_id:
            await self._remote.store_many(self._address(node_id), copies, timeout)
            return
        try:
            outcomes = await asyncio.gather(*(store_copy(self._store, copy) for copy in copies))
        except OSError as error:  # another holder takes this one's place
            raise MemberUnreachable(f"this node's disk failed: {error}") from error
        for copy, (stored, current) in zip(copies, outcomes, strict=True):
            if not stored and current != copy.version and not copy.committed:
                raise MemberUnreachable(f"this node holds {copy.message_id!r} at {current}")

    async def retrieve(self, node_id: str, message_id: str, version: Version) -> bytes | None:
        if node_id == self._own_id:
            return await self._store.get_version(message_id, version)
        return await self._remote.retrieve(self._address(node_id), message_id, version)

    async def inventory(self, node_id: str, verify: bool) -> Held:
        if node_id == self._own_id:
            return await held_here(self._store, verify)
        return await self._remote.inventory(self._address(node_id), verify)

    async def delete(self, node_id: str, copies: list[tuple[str, Version]]) -> None:
        if node_id == self._own_id:
            await self._store.delete(copies)
        else:
            await self._remote.delete(self._address(node_id), copies)


async def store_copy(store: MessageStore, copy: Copy) -> tuple[bool, Version]:
    """Store a copy as a holder does: a SET's pending, a repair's committed. Returns whether
    it was stored, and the version the node holds (committed) if it was not."""
    if copy.committed:
        outcome = await store.put(copy.message_id, copy.message, copy.version)
    else:
        outcome = await store.put_pending(copy.message_id, copy.message, copy.version)
    return outcome.stored, outcome.current


async def held_here(store: MessageStore, verify: bool) -> Held:
    # Pending first: a copy promoted between the two reads is then seen in one of them.
    pending = await store.pending_inventory(verify)
    return Held(await store.inventory(verify), pending)
