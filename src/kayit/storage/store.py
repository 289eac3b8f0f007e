"""MessageStore: the node's own copies, versioned, written in batches off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kayit.batching import Batcher
from kayit.storage.disk import DiskManager, FsyncPolicy
from kayit.version import UNKNOWN, Version

_SYNC_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    stored: bool  # False: a newer version was already here and stays
    current: Version


@dataclass(frozen=True, slots=True)
class _Write:
    message_id: str
    message: bytes
    version: Version


class MessageStore:
    """Async face of a DiskManager.

    Writes go to one dedicated thread, so they reach the disk in submission order and a batch
    shares one directory sync; reads use their own threads and never wait behind a sync.
    A copy is replaced only by a newer version. The leader passes ``keep_versions=False``:
    its index already holds every version, and a second map would double its memory.
    """

    def __init__(self, disk: DiskManager, *, keep_versions: bool = True) -> None:
        self.disk = disk
        self._keep_versions = keep_versions
        self._versions: dict[str, Version] = {}
        self._count = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kayit-disk-write")
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="kayit-disk-read")
        self._writes: Batcher[_Write, StoreOutcome] = Batcher(
            self._flush, max_items=1024, weigh=lambda write: len(write.message)
        )
        self._syncer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._count = await loop.run_in_executor(self._writer, self.disk.count)
        if self.disk.fsync is FsyncPolicy.EVERYSEC:
            self._syncer = asyncio.create_task(self._sync_every_second())

    async def close(self) -> None:
        if self._syncer:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        await asyncio.get_running_loop().run_in_executor(self._writer, self.disk.sync_dirty)
        self._writer.shutdown()
        self._readers.shutdown()

    @property
    def count(self) -> int:
        """Messages on this disk."""
        return self._count

    def version(self, message_id: str) -> Version | None:
        return self._versions.get(message_id)

    async def put(self, message_id: str, message: bytes, version: Version) -> StoreOutcome:
        return await self._writes.submit(_Write(message_id, message, version))

    async def get(self, message_id: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.disk.read, message_id)

    async def _flush(self, batch: list[_Write]) -> list[StoreOutcome]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._write_batch, batch)

    def _write_batch(self, batch: list[_Write]) -> list[StoreOutcome]:
        """Runs on the writer thread: the only place that changes files and versions."""
        outcomes: list[StoreOutcome] = []
        accepted: dict[str, _Write] = {}
        for write in batch:
            newest = accepted.get(write.message_id)
            current = newest.version if newest else self._versions.get(write.message_id, UNKNOWN)
            if write.version < current:
                outcomes.append(StoreOutcome(False, current))
                continue
            accepted[write.message_id] = write
            outcomes.append(StoreOutcome(True, write.version))
        self._count += self.disk.write_many(
            (write.message_id, write.message) for write in accepted.values()
        )
        if self._keep_versions:
            for message_id, write in accepted.items():
                self._versions[message_id] = write.version
        return outcomes

    async def _sync_every_second(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SYNC_INTERVAL)
            await loop.run_in_executor(self._writer, self.disk.sync_dirty)
