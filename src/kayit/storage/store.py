"""MessageStore: the node's own copies, versioned, written in batches off the event loop.

Besides the committed copy of each id, a node may hold pending copies: versions stored but not
committed yet. A pending copy never touches the committed one; once its version commits, it is
promoted (renamed over the committed file), and a pending copy that never commits is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from kayit.batching import Batcher
from kayit.storage.cache import ValueCache
from kayit.storage.data_format import ensure_format
from kayit.storage.disk import DiskManager, FsyncPolicy
from kayit.storage.journal import CopyRecord, Journal, checksum
from kayit.storage.pending_recovery import recover_pending
from kayit.storage.write_plan import Copy, StoreOutcome, Write, WriteKind, plan_writes
from kayit.supervision import supervise
from kayit.version import UNKNOWN, Version

__all__ = ["JOURNAL_FILE", "MessageStore", "StoreOutcome", "SyncHealth"]

log = logging.getLogger(__name__)

_SYNC_INTERVAL = 1.0
_SYNC_LOG_EVERY = 60  # a sync that keeps failing is logged again after this many attempts
_READ_THREADS = 4
JOURNAL_FILE = "journal.log"


@dataclass(frozen=True, slots=True)
class SyncHealth:
    """How the sync of every second (fsync=everysec) fares."""

    failures: int = 0  # syncs that failed since the store opened
    error: str = ""  # why the last sync failed; "" once one succeeded since (or none failed)


class _VersionRead(NamedTuple):
    message_id: str
    version: Version
    checksum: int
    committed: bool  # where the copy was when the read was asked for


class MessageStore:
    """Async face of a DiskManager and its journal.

    Writes go to one dedicated thread, so they reach the disk in submission order and a batch
    shares one sync; reads use their own threads and never wait behind a sync. A copy is
    replaced only by a newer version. Each copy's version and checksum are journaled beside
    the message files, so they survive a restart.
    """

    def __init__(self, disk: DiskManager, *, cache_bytes: int = 0) -> None:
        self.disk = disk
        self._cache = ValueCache(cache_bytes)
        self._journal = Journal(disk.directory.parent / JOURNAL_FILE)
        self._copies: dict[str, Copy] = {}  # id -> (version, checksum)
        # id -> version -> checksum (there are few pending copies). Only the
        # writer thread changes it, and it replaces an id's map instead of changing it, so the
        # loop and the readers may look without a lock.
        self._pending: dict[str, Mapping[Version, int]] = {}
        self._count = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kayit-disk-write")
        self._readers = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="kayit-disk-read")
        self._writes: Batcher[Write, StoreOutcome] = Batcher(
            self._flush, max_items=1024, weigh=lambda write: len(write.message or b"")
        )
        # Reads are batched too: one thread hand-off serves every GET of a batch.
        self._reads: Batcher[str, bytes | None] = Batcher(
            self._read_batch, max_items=256, in_flight=_READ_THREADS
        )
        self._version_reads: Batcher[_VersionRead, bytes | None] = Batcher(
            self._read_versions, max_items=256, in_flight=_READ_THREADS
        )
        self._syncer: asyncio.Task[None] | None = None
        self.sync_health = SyncHealth()
        self._sync_failures_in_a_row = 0

    async def open(self) -> dict[str, CopyRecord]:
        """Read the journal and the directories; returns the latest record of every good
        committed copy. The pending copies are found again too (``pending_inventory``), and a
        promotion a crash cut short is finished or undone."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, ensure_format, self.disk.directory.parent)
        records = await loop.run_in_executor(self._writer, self._journal.replay)
        pending = await loop.run_in_executor(
            self._writer, recover_pending, self.disk, self._journal, records
        )
        self._pending = dict(pending)
        if self._journal.lost_records and not self._journal.damaged:
            log.warning(
                "the journal lost records at an earlier start (kept in %s)",
                self._journal.damaged_copy,
            )
        self._count = await loop.run_in_executor(self._writer, self.disk.count)
        self._copies = {key: (r.version, r.checksum) for key, r in records.items()}
        if self.disk.fsync is FsyncPolicy.EVERYSEC:
            self._syncer = supervise("the disk sync", self._sync_every_second)
        return records

    async def close(self) -> None:
        if self._syncer:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._sync_all)
        except OSError as error:
            log.error(
                "the last sync before closing failed: %s; what this node stored since its last "
                "good sync may be lost in a power failure",
                error,
            )
        self._journal.close()
        self._writer.shutdown()
        self._readers.shutdown()

    @property
    def count(self) -> int:
        """Messages on this disk."""
        return self._count

    def version(self, message_id: str) -> Version | None:
        copy = self._copies.get(message_id)
        return copy[0] if copy else None

    async def put(self, message_id: str, message: bytes, version: Version) -> StoreOutcome:
        """Store a committed copy, unless a newer one is here; pending copies of the id up to
        ``version`` are dropped."""
        record = CopyRecord(message_id, version, checksum(message))
        return await self._writes.submit(Write(WriteKind.COMMITTED, record, message))

    async def record(self, record: CopyRecord) -> StoreOutcome:
        """Journal a new record for a copy already on this disk, such as new holders."""
        return await self._writes.submit(Write(WriteKind.COMMITTED, record, None))

    async def put_pending(self, message_id: str, message: bytes, version: Version) -> StoreOutcome:
        """Store a copy of ``version`` beside the committed one, which stays as it is, durably
        by the fsync policy. Refused (``stored`` False, ``current`` the committed version)
        unless newer than the committed copy; a pending copy of the same version is replaced."""
        record = CopyRecord(message_id, version, checksum(message), pending=True)
        return await self._writes.submit(Write(WriteKind.PENDING, record, message))

    async def promote(self, message_id: str, version: Version) -> bool:
        """Make the pending copy of ``version`` the committed one (a rename: a crash leaves the
        old committed copy or this one) and drop the older pending copies of the id. False,
        changing nothing, if there is no such pending copy: promoted already, or never here."""
        record = CopyRecord(message_id, version, 0)
        outcome = await self._writes.submit(Write(WriteKind.PROMOTE, record, None))
        return outcome.stored

    async def drop_pending(self, copies: list[tuple[str, Version]]) -> int:
        """Remove these pending copies (of writes that never committed); returns how many
        were here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._drop_pending, copies)

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

    async def pending_inventory(self, verify: bool) -> list[tuple[str, Version]]:
        """Every pending copy, as ``inventory`` lists the committed ones: with ``verify``,
        only those whose bytes match their checksum, and the others are dropped."""
        loop = asyncio.get_running_loop()
        held, broken = await loop.run_in_executor(self._readers, self._pending_held, verify)
        # A copy promoted while this looked is gone from pending/ too: drop_pending knows it
        # no longer as pending, and counts only the copies it really dropped.
        dropped = await self.drop_pending(broken) if broken else 0
        if dropped:
            log.warning("%d pending copies failed their checksum or are gone; dropped", dropped)
        return held

    async def pending_copies(self) -> list[tuple[str, Version, int]]:
        """Every pending copy whose bytes match its checksum (read from its file, as
        ``pending_inventory(verify=True)`` does), with that checksum; the others are
        dropped."""
        held = await self.pending_inventory(verify=True)
        copies = []
        for message_id, version in held:
            expected = self._pending.get(message_id, {}).get(version)
            if expected is not None:  # else promoted or dropped since
                copies.append((message_id, version, expected))
        return copies

    async def get(self, message_id: str) -> bytes | None:
        """The bytes of the committed copy's file, unchecked (``get_verified`` checks)."""
        known = self._copies.get(message_id)
        cached = self._cache.get(message_id)
        if cached is not None and known is not None and checksum(cached) == known[1]:
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

    async def get_version(self, message_id: str, version: Version) -> bytes | None:
        """The copy of exactly ``version``, committed or pending, if its bytes match its
        checksum; a missing, unrecorded or damaged copy is None."""
        committed = self._copies.get(message_id)
        if committed is not None and committed[0] == version:
            read = _VersionRead(message_id, version, committed[1], committed=True)
        else:
            expected = self._pending.get(message_id, {}).get(version)
            if expected is None:
                return None
            read = _VersionRead(message_id, version, expected, committed=False)
        # The cache holds the bytes last written for the id, of whatever version: the
        # checksum tells whether they are this version's.
        cached = self._cache.get(message_id)
        if cached is not None and checksum(cached) == read.checksum:
            return cached
        return await self._version_reads.submit(read)

    async def _read_versions(self, reads: list[_VersionRead]) -> list[bytes | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._readers, lambda: [self._read_version(read) for read in reads]
        )

    def _read_version(self, read: _VersionRead) -> bytes | None:
        """Runs on a reader thread. A promotion may move the copy while this reads, so the
        other place is read too before the copy is taken for missing."""
        key, version = read.message_id, read.version
        places: list[Callable[[], bytes | None]] = [
            lambda: self.disk.read(key),
            lambda: self.disk.read_pending(key, version),
        ]
        for place in places if read.committed else reversed(places):
            message = place()
            if message is not None and checksum(message) == read.checksum:
                return message
        log.warning("copy of %r at %s is missing or damaged; not served", key, version)
        return None

    async def _flush(self, batch: list[Write]) -> list[StoreOutcome]:
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self._writer, self._write_batch, batch)
        # The cache changes here, on the event loop, before any writer hears back: a GET
        # after a SET finds the new value, and no read can put an older one back. It keeps
        # the bytes last written for each id, pending or committed (a promotion keeps them);
        # readers check them against the checksum of the version they want.
        for write, outcome in zip(batch, outcomes, strict=True):
            if outcome.stored and write.message is not None:
                self._cache.put(write.record.message_id, write.message)
        return outcomes

    def _write_batch(self, batch: list[Write]) -> list[StoreOutcome]:
        """Runs on the writer thread: the only place that changes files, journal and versions."""
        plan = plan_writes(batch, self._copies.get, self._pending_on_disk)
        # The new bytes are staged first, under names no reader looks at and no record names
        # (a failure there, such as a full disk, removes them and leaves everything as it
        # was); then journaled, before any committed file is replaced: the record is the
        # commit point. A crash before the renames leaves the old file under the new record,
        # which its checksum refuses to serve, and the leader's index (rebuilt from the
        # journal) names the new version, which its members already hold. Renames first would
        # leave the reverse on the leader: the new bytes under the old record, the old version
        # held nowhere any more. A batch that fails from here on leaves what a crash there
        # would; what this store knows stays as it was, so a copy whose file changed is not
        # served until the next start reads its record.
        staged = self.disk.stage(plan.committed_files.items(), plan.pending_files)
        try:
            self._journal_durably(plan.records)
        except BaseException:
            self.disk.discard(staged)
            raise
        self._count += self.disk.install(staged)
        if plan.promotions:
            # Promotions go the other way, file first: a crash after the rename leaves the
            # new bytes beside the pending record whose file is gone, which open() finishes
            # (pending_recovery); no crash can leave an id with neither copy.
            self._count += self.disk.promote_many(plan.promotions)
            self._journal_durably(plan.promotion_records)
        for message_id, version in plan.leftovers:
            self.disk.delete_pending(message_id, version)
        self._copies.update(plan.committed)
        for key, versions in plan.pending.items():
            self._set_pending(key, versions)
        return plan.outcomes

    def _drop_pending(self, copies: list[tuple[str, Version]]) -> int:
        """Runs on the writer thread."""
        left: dict[str, dict[Version, int]] = {}
        gone: list[CopyRecord] = []
        for message_id, version in copies:
            versions = left.setdefault(message_id, dict(self._pending.get(message_id, {})))
            expected = versions.pop(version, None)
            if expected is not None:
                gone.append(CopyRecord(message_id, version, expected, deleted=True, pending=True))
        self._journal_durably(gone)  # before the files: a file left behind is removed at start
        for record in gone:
            self.disk.delete_pending(record.message_id, record.version)
        for message_id, versions in left.items():
            self._set_pending(message_id, versions)
        return len(gone)

    def _journal_durably(self, records: list[CopyRecord]) -> None:
        if records:
            self._journal.append(records)
            if self.disk.fsync is FsyncPolicy.ALWAYS:
                self._journal.sync()

    def _set_pending(self, message_id: str, versions: dict[Version, int]) -> None:
        if versions:
            self._pending[message_id] = versions
        else:
            self._pending.pop(message_id, None)

    def _pending_on_disk(self, message_id: str) -> dict[Version, int]:
        """The pending copies of an id that still have a file: one that went missing is
        forgotten rather than promoted (journaling a copy this node does not hold)."""
        return {
            version: expected
            for version, expected in self._pending.get(message_id, {}).items()
            if self.disk.pending_path(message_id, version).exists()
        }

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

    def _pending_held(
        self, verify: bool
    ) -> tuple[list[tuple[str, Version]], list[tuple[str, Version]]]:
        """(pending copies held, pending copies recorded but missing or damaged)."""
        held: list[tuple[str, Version]] = []
        broken: list[tuple[str, Version]] = []
        for message_id, versions in list(self._pending.items()):
            for version, expected in versions.items():
                if verify:
                    message = self.disk.read_pending(message_id, version)
                    good = message is not None and checksum(message) == expected
                else:
                    good = self.disk.pending_path(message_id, version).exists()
                (held if good else broken).append((message_id, version))
        return held, broken

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
        """A sync that fails (too many open files, a full or failing disk) is tried again a
        second later, with everything it should have synced; ``sync_health`` says how it
        went, for the node's status and report."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SYNC_INTERVAL)
            try:
                await loop.run_in_executor(self._writer, self._sync_all)
            except OSError as error:
                self._sync_failed(error)
            else:
                self._synced()

    def _sync_failed(self, error: OSError) -> None:
        in_a_row = self._sync_failures_in_a_row = self._sync_failures_in_a_row + 1
        failures = self.sync_health.failures + 1
        if in_a_row == 1:
            # After an fsync that failed with EIO, Linux may have dropped the pages it could
            # not write: a later sync that succeeds does not bring them back.
            risk = (
                "may be lost even if a later sync succeeds (an I/O error: check the disk)"
                if error.errno == errno.EIO
                else "may be lost in a power failure"
            )
            log.error(
                "syncing this node's disk failed: %s; what it stored since the last good sync "
                "%s; trying again every second",
                error,
                risk,
            )
        elif in_a_row % _SYNC_LOG_EVERY == 0 or str(error) != self.sync_health.error:
            log.error("syncing this node's disk still fails (%d in a row): %s", in_a_row, error)
        self.sync_health = SyncHealth(failures, str(error))

    def _synced(self) -> None:
        if self._sync_failures_in_a_row:
            log.warning(
                "syncing this node's disk works again, after %d failed attempts",
                self._sync_failures_in_a_row,
            )
            self._sync_failures_in_a_row = 0
            self.sync_health = SyncHealth(self.sync_health.failures)
