"""MessageStore: the node's own copies, versioned, written in batches off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kayit.batching import Batcher
from kayit.storage.cache import ValueCache
from kayit.storage.data_format import ensure_format
from kayit.storage.disk import DiskManager, FsyncPolicy
from kayit.storage.journal import CopyRecord, Journal, checksum
from kayit.version import UNKNOWN, Version

log = logging.getLogger(__name__)

_SYNC_INTERVAL = 1.0
_READ_THREADS = 4
JOURNAL_FILE = "journal.log"


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    stored: bool  # False: a newer version was already here and stays
    current: Version


@dataclass(frozen=True, slots=True)
class _Write:
    record: CopyRecord
    message: bytes | None  # None: only the record changes (the leader moved a copy)


class MessageStore:
    """Async face of a DiskManager and its journal.

    Writes go to one dedicated thread, so they reach the disk in submission order and a batch
    shares one sync; reads use their own threads and never wait behind a sync. A copy is
    replaced only by a newer version. Each copy's version and checksum are journaled beside
    the message files, so they survive a restart.

    The leader passes ``keep_versions=False``: its index holds every version, and a second
    map would double its memory; it rebuilds that index from what ``open`` returns.
    """

    def __init__(
        self, disk: DiskManager, *, keep_versions: bool = True, cache_bytes: int = 0
    ) -> None:
        self.disk = disk
        self._cache = ValueCache(cache_bytes)
        self._journal = Journal(disk.directory.parent / JOURNAL_FILE)
        self._keep_versions = keep_versions
        self._copies: dict[str, tuple[Version, int]] = {}  # id -> (version, checksum)
        self._count = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kayit-disk-write")
        self._readers = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="kayit-disk-read")
        self._writes: Batcher[_Write, StoreOutcome] = Batcher(
            self._flush, max_items=1024, weigh=lambda write: len(write.message or b"")
        )
        # Reads are batched too: one thread hand-off serves every GET of a batch.
        self._reads: Batcher[str, bytes | None] = Batcher(
            self._read_batch, max_items=256, in_flight=_READ_THREADS
        )
        self._syncer: asyncio.Task[None] | None = None

    async def open(self) -> dict[str, CopyRecord]:
        """Read the journal and the directory; returns the latest record of every good copy
        (``journal_lost_records`` says whether damage cost any)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, ensure_format, self.disk.directory.parent)
        records = await loop.run_in_executor(self._writer, self._journal.replay)
        if self._journal.lost_records and not self._journal.damaged:
            log.warning(
                "the journal lost records at an earlier start (kept in %s)",
                self._journal.damaged_copy,
            )
        self._count = await loop.run_in_executor(self._writer, self.disk.count)
        if self._keep_versions:
            self._copies = {key: (r.version, r.checksum) for key, r in records.items()}
        if self.disk.fsync is FsyncPolicy.EVERYSEC:
            self._syncer = asyncio.create_task(self._sync_every_second())
        return records

    async def close(self) -> None:
        if self._syncer:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        await asyncio.get_running_loop().run_in_executor(self._writer, self._sync_all)
        self._journal.close()
        self._writer.shutdown()
        self._readers.shutdown()

    @property
    def journal_lost_records(self) -> bool:
        """Damage cost journal records (now or at an earlier start): some copies here, and
        on the leader some index entries, may be unknown. Valid once ``open`` returned."""
        return self._journal.lost_records

    @property
    def count(self) -> int:
        """Messages on this disk."""
        return self._count

    def version(self, message_id: str) -> Version | None:
        copy = self._copies.get(message_id)
        return copy[0] if copy else None

    async def put(
        self, message_id: str, message: bytes, version: Version, holders: Sequence[str] = ()
    ) -> StoreOutcome:
        record = CopyRecord(message_id, version, checksum(message), tuple(holders))
        return await self._writes.submit(_Write(record, message))

    async def record(self, record: CopyRecord) -> StoreOutcome:
        """Journal a new record for a copy already on this disk, such as new holders."""
        return await self._writes.submit(_Write(record, None))

    async def delete(self, copies: list[tuple[str, Version]]) -> int:
        """Remove each copy whose version is not newer than the one given; returns how many
        went. A copy of a newer version stays (a SET reached it after the caller looked)."""
        loop = asyncio.get_running_loop()
        deleted = await loop.run_in_executor(self._writer, self._delete, copies)
        for message_id, _ in copies:
            self._cache.drop(message_id)
        return deleted

    async def inventory(self, verify: bool) -> list[tuple[str, Version]]:
        """Every copy this store has a record of and a file for; with ``verify``, only those
        whose bytes still match their checksum, and the others are removed: they can never
        be served, and the leader has them made again."""
        loop = asyncio.get_running_loop()
        held, broken = await loop.run_in_executor(self._readers, self._inventory, verify)
        if broken:
            log.warning("%d copies here failed their checksum or are gone; removed", len(broken))
            await self.delete(broken)
        return held

    async def get(self, message_id: str) -> bytes | None:
        cached = self._cache.get(message_id)
        if cached is not None:
            return cached
        return await self._reads.submit(message_id)

    async def _read_batch(self, message_ids: list[str]) -> list[bytes | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._readers, lambda: [self.disk.read(key) for key in message_ids]
        )

    async def get_verified(self, message_id: str) -> tuple[bytes, Version] | None:
        """The copy and its version, if its bytes match the journaled checksum; a missing,
        unrecorded or damaged copy is None."""
        known = self._copies.get(message_id)
        message = await self.get(message_id)
        if known is None or message is None:
            return None
        version, expected = known
        if checksum(message) != expected:
            log.warning("copy of %r does not match its checksum; not served", message_id)
            return None
        return message, version

    async def _flush(self, batch: list[_Write]) -> list[StoreOutcome]:
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self._writer, self._write_batch, batch)
        # The cache changes here, on the event loop, before any writer hears back: a GET
        # after a SET finds the new value, and no read can put an older one back.
        for write, outcome in zip(batch, outcomes, strict=True):
            if outcome.stored and write.message is not None:
                self._cache.put(write.record.message_id, write.message)
        return outcomes

    def _write_batch(self, batch: list[_Write]) -> list[StoreOutcome]:
        """Runs on the writer thread: the only place that changes files, journal and versions."""
        outcomes: list[StoreOutcome] = []
        accepted: dict[str, _Write] = {}
        for write in batch:
            key = write.record.message_id
            newest = accepted.get(key)
            current = newest.record.version if newest else self._known_version(key)
            if write.record.version < current:
                outcomes.append(StoreOutcome(False, current))
                continue
            accepted[key] = write
            outcomes.append(StoreOutcome(True, write.record.version))
        # Journaled before the files: the record is the commit point. A crash in between
        # leaves the old file under the new record, which its checksum refuses to serve, and
        # the leader's index (rebuilt from the journal) names the new version, which its
        # members already hold. Files first would leave the reverse on the leader: the new
        # bytes under the old record, the old version held nowhere any more.
        self._journal.append(write.record for write in accepted.values())
        if self.disk.fsync is FsyncPolicy.ALWAYS:
            self._journal.sync()
        self._count += self.disk.write_many(
            (key, w.message) for key, w in accepted.items() if w.message is not None
        )
        if self._keep_versions:
            for key, write in accepted.items():
                self._copies[key] = (write.record.version, write.record.checksum)
        return outcomes

    def _delete(self, copies: list[tuple[str, Version]]) -> int:
        """Runs on the writer thread."""
        gone = []
        for message_id, version in copies:
            known = self._known_version(message_id)
            if known > version:
                continue
            if self.disk.delete(message_id):
                self._count -= 1
            self._copies.pop(message_id, None)
            gone.append(CopyRecord(message_id, version, 0, deleted=True))
        self._journal.append(gone)
        if self.disk.fsync is FsyncPolicy.ALWAYS:
            self._journal.sync()
        return len(gone)

    def _inventory(
        self, verify: bool
    ) -> tuple[list[tuple[str, Version]], list[tuple[str, Version]]]:
        """(copies held, copies recorded but missing or damaged)."""
        held: list[tuple[str, Version]] = []
        broken: list[tuple[str, Version]] = []
        for message_id, (version, expected) in list(self._copies.items()):
            if verify:
                message = self.disk.read(message_id)
                good = message is not None and checksum(message) == expected
            else:
                good = self.disk.path(message_id).exists()
            (held if good else broken).append((message_id, version))
        return held, broken

    def _known_version(self, message_id: str) -> Version:
        copy = self._copies.get(message_id)
        return copy[0] if copy else UNKNOWN

    def _sync_all(self) -> None:
        self.disk.sync_dirty()
        self._journal.sync()

    async def _sync_every_second(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SYNC_INTERVAL)
            await loop.run_in_executor(self._writer, self._sync_all)
