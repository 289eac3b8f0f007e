"""PendingCopies: a node's pending copies follow the committed metadata. A copy is promoted
when the ``Placed`` entry of its version, naming this node, is applied; it is dropped once the
metadata says it will never be (a newer version committed, its id deleted at a newer version,
or its version went elsewhere, or a later term committed without it). Every node runs this on
its own copies, whoever leads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kayit.metadata.commands import PlacedItem
from kayit.metadata.machine import MetadataView
from kayit.storage.store import MessageStore
from kayit.version import Version

log = logging.getLogger(__name__)


class PendingCopies:
    def __init__(
        self, node_id: str, store: MessageStore, metadata: Callable[[], MetadataView]
    ) -> None:
        self._node_id = node_id
        self._store = store
        self._metadata = metadata
        self._to_promote: list[tuple[str, Version]] = []
        self._wakeup = asyncio.Event()

    def placed(self, items: list[PlacedItem]) -> None:
        """The metadata applied these items (MetadataMachine's ``on_placed``)."""
        own = [(i.message_id, i.version) for i in items if self._node_id in i.holders]
        if own:
            self._to_promote += own
            self._wakeup.set()

    async def run(self, settle_every: float) -> None:
        """Promote as entries are applied; every ``settle_every`` seconds, and at the start
        (after a restart, or a snapshot that named no items), look at every pending copy."""
        loop = asyncio.get_running_loop()
        next_settle = loop.time()
        while True:
            if loop.time() >= next_settle:
                await self.settle()
                next_settle = loop.time() + settle_every
            try:
                async with asyncio.timeout(next_settle - loop.time()):
                    await self._wakeup.wait()
            except TimeoutError:
                continue
            self._wakeup.clear()
            batch, self._to_promote = self._to_promote, []
            await asyncio.gather(*(self._store.promote(key, version) for key, version in batch))

    async def settle(self) -> None:
        metadata = self._metadata()
        promote: list[tuple[str, Version]] = []
        drop: list[tuple[str, Version]] = []
        for message_id, version in await self._store.pending_inventory(verify=False):
            entry = metadata.entry(message_id)
            if entry is not None and entry.version == version:
                (promote if self._node_id in entry.holders else drop).append((message_id, version))
            elif entry is not None and entry.version > version:
                drop.append((message_id, version))  # overwritten
            elif _deleted_since(metadata, message_id, version):
                drop.append((message_id, version))
            elif version.term < metadata.last_leader_term:
                drop.append((message_id, version))  # a later term committed: never will be
        for message_id, version in promote:
            await self._store.promote(message_id, version)
        if drop:
            await self._store.drop_pending(drop)
        if promote or drop:
            log.info(
                "pending copies settled: %d promoted, %d dropped (never committed here)",
                len(promote),
                len(drop),
            )


def _deleted_since(metadata: MetadataView, message_id: str, version: Version) -> bool:
    """The id was deleted at ``version`` or a newer one (its tombstone is kept)."""
    tomb = metadata.tombstone(message_id)
    return tomb is not None and version <= tomb.version
