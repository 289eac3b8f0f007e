"""MessageStore: the node's own copies, versioned, written in batches off the event loop.

Besides the committed copy of each id, a node may hold pending copies: versions stored but not
committed yet. A pending copy never touches the committed one; once its version commits, it is
promoted, and a pending copy that never commits is dropped.

A copy is stored when its bytes are in the copy log and its record in the journal, synced by
the fsync policy; committed copies reach their ``messages/<id>.msg`` files behind that, written
by the materializer (the backlog, bounded: stores wait while it is full).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from kayit.batching import Batcher
from kayit.storage.cache import ValueCache
from kayit.storage.copy_table import CopyTable
from kayit.storage.copylog import LOG_DIR, CopyLog, LoggedCopy
from kayit.storage.data_format import ensure_format
from kayit.storage.disk import DiskManager, FsyncPolicy
from kayit.storage.journal import CopyRecord, Journal, checksum
from kayit.storage.materializer import DEFAULT_BACKLOG, BacklogLimit, Materializer
from kayit.storage.pending_recovery import recover_copies
from kayit.storage.write_plan import StoreOutcome, Write, WriteKind, plan_writes
from kayit.supervision import supervise
from kayit.version import UNKNOWN, Version

__all__ = ["JOURNAL_FILE", "BacklogLimit", "MessageStore", "StoreOutcome", "SyncHealth"]

log = logging.getLogger(__name__)

_SYNC_INTERVAL = 1.0
_SYNC_LOG_EVERY = 60  # a sync that keeps failing is logged again after this many attempts
_READ_THREADS = 4
JOURNAL_FILE = "journal.log"


@dataclass(frozen=True, slots=True)
class SyncHealth:
    """How the disk takes the node's writes: the sync of every second (fsync=everysec), and
    the message files written behind the copy log."""

    failures: int = 0  # syncs and file writes that failed since the store opened
    error: str = ""  # why the last one failed; "" once one succeeded since (or none failed)


class _VersionRead(NamedTuple):
    message_id: str
    version: Version
    checksum: int


class MessageStore:
    """Async face of a DiskManager, its copy log and its journal.

    Writes go to one dedicated thread, so they reach the log in submission order and a batch
    shares one sync; reads use their own threads and never wait behind a sync. A copy is
    replaced only by a newer version. Each copy's version and checksum are journaled beside
    the message files, so they survive a restart.
    """

    def __init__(
        self, disk: DiskManager, *, cache_bytes: int = 0, backlog: BacklogLimit = DEFAULT_BACKLOG
    ) -> None:
        self.disk = disk
        self._cache = ValueCache(cache_bytes)
        node_dir = disk.directory.parent
        self._journal = Journal(node_dir / JOURNAL_FILE)
        self._log = CopyLog(node_dir / LOG_DIR)
        self._materializer = Materializer(disk, self._log, backlog, self._progress)
        self._copies = CopyTable()  # id -> (version, checksum)
        # id -> version -> checksum (there are few pending copies). Only the
        # writer thread changes it, and it replaces an id's map instead of changing it, so the
        # loop and the readers may look without a lock.
        self._pending: dict[str, Mapping[Version, int]] = {}
        # (id, version) -> (bytes, segment of their log record), of every pending copy.
        self._pending_bytes: dict[tuple[str, Version], tuple[bytes, int]] = {}
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room = asyncio.Event()  # set whenever the materializer made progress
        self._syncer: asyncio.Task[None] | None = None
        self._sync_health = SyncHealth()
        self._sync_failures_in_a_row = 0

    async def open(self) -> dict[str, CopyRecord]:
        """Read the journal and the copy log, and write every committed copy the log holds
        whose file does not hold it yet; returns the latest record of every good committed
        copy. The pending copies are found again too (``pending_inventory``)."""
        self._loop = loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, ensure_format, self.disk.directory.parent)
        records = await loop.run_in_executor(self._writer, self._recover)
        if self._journal.lost_records and not self._journal.damaged:
            log.warning(
                "the journal lost records at an earlier start (kept in %s)",
                self._journal.damaged_copy,
            )
        self._copies = CopyTable({key: (r.version, r.checksum) for key, r in records.items()})
        self._materializer.start()
        if self.disk.fsync is FsyncPolicy.EVERYSEC:
            self._syncer = supervise("the disk sync", self._sync_every_second)
        return records

    def _recover(self) -> dict[str, CopyRecord]:
        """Runs on the writer thread."""
        records = self._journal.replay()
        recovered = recover_copies(self.disk, self._journal, records, self._log.open())
        if recovered.files_written:
            log.warning(
                "wrote %d message files from the copy log (not written before the last stop)",
                recovered.files_written,
            )
        pending = recovered.pending
        for _, segment in pending.values():
            self._log.hold(segment)
        if recovered.legacy:  # each record appended holds its segment
            segment = self._log.append(recovered.legacy)
            self._log.sync()
            pending |= {(c.message_id, c.version): (c.message, segment) for c in recovered.legacy}
        self.disk.remove_legacy_pending()
        self._log.collect()
        self._pending_bytes = pending
        by_id: dict[str, dict[Version, int]] = {}
        for key, version in pending:
            by_id.setdefault(key, {})[version] = checksum(pending[key, version][0])
        self._pending = dict(by_id)
        return records

    async def close(self) -> None:
        if self._syncer:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._materializer.stop)
        try:
            await loop.run_in_executor(self._writer, self._sync_all)
        except OSError as error:
            log.error(
                "the last sync before closing failed: %s; what this node stored since its last "
                "good sync may be lost in a power failure",
                error,
            )
        self._log.close()
        self._journal.close()
        self._writer.shutdown()
        self._readers.shutdown()

    @property
    def count(self) -> int:
        """Messages on this node (committed copies, in their files or on their way)."""
        return len(self._copies)

    @property
    def backlog(self) -> int:
        """Committed copies not in their files yet."""
        return self._materializer.records

    @property
    def backlog_bound(self) -> int:
        """The copies the backlog may hold before stores wait: what this disk writes in about
        two seconds, as measured (``BacklogLimit.bound``)."""
        return self._materializer.bound()

    def version(self, message_id: str) -> Version | None:
        copy = self._copies.get(message_id)
        return copy[0] if copy else None

    async def put(self, message_id: str, message: bytes, version: Version) -> StoreOutcome:
        """Store a committed copy, unless a newer one is here; pending copies of the id up to
        ``version`` are dropped. Waits while the backlog is full (``_backlog_room``)."""
        await self._backlog_room()
        record = CopyRecord(message_id, version, checksum(message))
        return await self._writes.submit(Write(WriteKind.COMMITTED, record, message))

    async def put_pending(self, message_id: str, message: bytes, version: Version) -> StoreOutcome:
        """Store a copy of ``version`` beside the committed one, which stays as it is, durably
        by the fsync policy. Refused (``stored`` False, ``current`` the committed version)
        unless newer than the committed copy; a pending copy of the same version is replaced.
        Waits while the backlog is full."""
        await self._backlog_room()
        record = CopyRecord(message_id, version, checksum(message), pending=True)
        return await self._writes.submit(Write(WriteKind.PENDING, record, message))

    async def promote(self, message_id: str, version: Version) -> bool:
        """Make the pending copy of ``version`` the committed one (its record is the commit
        point; its file is written behind) and drop the older pending copies of the id. False,
        changing nothing, if there is no such pending copy: promoted already, or never here.
        Never waits for the backlog: it is how the backlog's copies get there."""
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

    async def drained(self) -> None:
        """Wait until every committed copy is in its file."""
        while self._materializer.records:
            self._room.clear()
            await self._room.wait()

    async def inventory(self, verify: bool) -> list[tuple[str, Version]]:
        """Every copy this store has a record of and a file (or a copy on its way to it)
        for; with ``verify``, only those whose bytes still match their checksum, and the
        others are removed: they can never be served, and the leader has them made again."""
        loop = asyncio.get_running_loop()
        held, broken = await loop.run_in_executor(self._readers, self._inventory, verify)
        if broken:
            log.warning("%d copies here failed their checksum or are gone; removed", len(broken))
            await self.delete(broken)
        return held

    async def pending_inventory(self, verify: bool) -> list[tuple[str, Version]]:
        """Every pending copy. Their bytes are in memory, checked against their checksum when
        the log was read, so ``verify`` finds none damaged."""
        return list(self._pending_bytes)

    async def pending_copies(self) -> list[tuple[str, Version, int]]:
        """Every pending copy, with its checksum."""
        return [
            (message_id, version, expected)
            for message_id, versions in list(self._pending.items())
            for version, expected in versions.items()
        ]

    async def get(self, message_id: str) -> bytes | None:
        """The bytes of the committed copy, unchecked (``get_verified`` checks)."""
        known = self._copies.get(message_id)
        cached = self._cache.get(message_id)
        if cached is not None and known is not None and checksum(cached) == known[1]:
            return cached
        waiting = self._materializer.waiting(message_id)
        if waiting is not None:
            return waiting
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
        if known is None:
            return None
        message = await self.get_version(message_id, known[0])
        return (message, known[0]) if message is not None else None

    async def get_version(self, message_id: str, version: Version) -> bytes | None:
        """The copy of exactly ``version``, committed or pending, if its bytes match its
        checksum; a missing, unrecorded or damaged copy is None."""
        committed = self._copies.get(message_id)
        if committed is None or committed[0] != version:
            found = self._pending_bytes.get((message_id, version))
            return found[0] if found is not None else None
        expected = committed[1]
        message = self._committed_in_memory(message_id, expected)
        if message is not None:
            return message
        return await self._version_reads.submit(_VersionRead(message_id, version, expected))

    def in_memory(self, message_id: str, version: Version, expected: int) -> bytes | None:
        """The copy of exactly ``version``, committed or pending, if its bytes are in memory
        and match ``expected`` (the checksum the index names); None otherwise, and then only
        ``get_version``, which reads the file, can tell."""
        committed = self._copies.get(message_id)
        if committed is not None and committed[0] == version:
            return self._committed_in_memory(message_id, expected)
        found = self._pending_bytes.get((message_id, version))
        return found[0] if found is not None and checksum(found[0]) == expected else None

    def _committed_in_memory(self, message_id: str, expected: int) -> bytes | None:
        # The cache holds the bytes last written for the id, of whatever version: the
        # checksum tells whether they are this version's.
        for message in (self._cache.get(message_id), self._materializer.waiting(message_id)):
            if message is not None and checksum(message) == expected:
                return message
        return None

    async def _read_versions(self, reads: list[_VersionRead]) -> list[bytes | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._readers, lambda: [self._read_version(read) for read in reads]
        )

    def _read_version(self, read: _VersionRead) -> bytes | None:
        """Runs on a reader thread."""
        message = self._read_committed(read.message_id, read.checksum)
        if message is not None:
            return message
        log.warning("copy of %r at %s is missing or damaged; not served", *read[:2])
        return None

    def _read_committed(self, message_id: str, expected: int) -> bytes | None:
        """The committed bytes, if they match ``expected``. A file read while the materializer
        overwrites it may not: then it is read again under the materializer's lock."""
        message = self.disk.read(message_id)
        if message is None or checksum(message) != expected:
            message = self._materializer.read(message_id)
        return message if message is not None and checksum(message) == expected else None

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
        """Runs on the writer thread: the only place that changes the logs and versions."""
        plan = plan_writes(batch, self._copies.get, lambda key: self._pending.get(key, {}))
        # The bytes are logged before the records that name them: a crash between leaves
        # log records no journal record names, which nothing reads. The journal record is the
        # commit point; a failure before it leaves what this store knows as it was.
        logged = [
            LoggedCopy(key, version, checksum(data), data)
            for key, version, data in plan.pending_files
        ]
        logged += [
            LoggedCopy(key, plan.committed[key][0], checksum(data), data)
            for key, data in plan.committed_files.items()
        ]
        segment = self._log.append(logged) if logged else 0
        try:
            self._journal.append(plan.records)
        except BaseException:
            for _ in logged:
                self._log.release(segment)
            raise
        if self.disk.fsync is FsyncPolicy.ALWAYS:
            self._log.sync()
            self._journal.sync()
        for key, version, data in plan.pending_files:
            self._forget_pending(key, version)
            self._pending_bytes[key, version] = (data, segment)
        for key, version in plan.leftovers:
            self._forget_pending(key, version)
        to_files = [(key, data, segment) for key, data in plan.committed_files.items()]
        to_files += [(key, *self._pending_bytes[key, version]) for key, version in plan.promotions]
        # Into the backlog before the new versions are known and before out of the pending
        # copies: a reader (an inventory) that finds a version then finds its bytes too.
        self._materializer.add(to_files)
        self._copies.update(plan.committed)
        for key, version in plan.promotions:  # its log record went with it
            del self._pending_bytes[key, version]
        for key, versions in plan.pending.items():
            self._set_pending(key, versions)
        return plan.outcomes

    def _forget_pending(self, message_id: str, version: Version) -> None:
        found = self._pending_bytes.pop((message_id, version), None)
        if found is not None:
            self._log.release(found[1])

    def _drop_pending(self, copies: list[tuple[str, Version]]) -> int:
        """Runs on the writer thread."""
        left: dict[str, dict[Version, int]] = {}
        gone: list[CopyRecord] = []
        for message_id, version in copies:
            versions = left.setdefault(message_id, dict(self._pending.get(message_id, {})))
            expected = versions.pop(version, None)
            if expected is not None:
                gone.append(CopyRecord(message_id, version, expected, deleted=True, pending=True))
        self._journal_durably(gone)
        for record in gone:
            self._forget_pending(record.message_id, record.version)
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

    def _delete(self, copies: list[tuple[str, Version]]) -> int:
        """Runs on the writer thread."""
        gone = []
        for message_id, version in copies:
            if self._known_version(message_id) > version:
                continue
            self._copies.discard(message_id)  # first: no reader looks for the file then
            self._materializer.delete(message_id)
            gone.append(CopyRecord(message_id, version, 0, deleted=True))
        self._journal_durably(gone)
        return len(gone)

    def _inventory(
        self, verify: bool
    ) -> tuple[list[tuple[str, Version]], list[tuple[str, Version]]]:
        """(copies held, copies recorded but missing or damaged)."""
        held: list[tuple[str, Version]] = []
        broken: list[tuple[str, Version]] = []
        for message_id, (version, expected) in self._copies.items():
            if self._materializer.waiting(message_id) is not None:
                good = True  # its bytes were checked when they were logged
            elif verify:
                good = self._read_committed(message_id, expected) is not None
            else:
                good = self.disk.path(message_id).exists() or (
                    self._materializer.read(message_id) is not None
                )
            (held if good else broken).append((message_id, version))
        return held, broken

    def _known_version(self, message_id: str) -> Version:
        copy = self._copies.get(message_id)
        return copy[0] if copy else UNKNOWN

    async def _backlog_room(self) -> None:
        """Back-pressure: wait while the backlog is full. While it is full because files
        cannot be written at all (no inodes left, say), waiting would not end: the store
        fails instead, as a write to a failing disk does."""
        while self._materializer.full():
            if self._materializer.failure:
                raise OSError(f"message files cannot be written: {self._materializer.failure}")
            self._room.clear()
            await self._room.wait()

    def _progress(self) -> None:
        """The materializer wrote files (called on its thread)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                self._loop.call_soon_threadsafe(self._room.set)

    def _sync_all(self) -> None:
        self.disk.sync_dirty()
        self._log.sync()
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

    @property
    def sync_health(self) -> SyncHealth:
        """How the disk takes this node's writes: the sync of every second, and the writing
        of message files behind the copy log (a failure of either means what the node holds
        is not all where it should be)."""
        sync, files = self._sync_health, self._materializer
        failures = sync.failures + files.failures
        if sync.error or not files.failure:
            return SyncHealth(failures, sync.error)
        return SyncHealth(failures, f"writing message files: {files.failure}")

    def _sync_failed(self, error: OSError) -> None:
        in_a_row = self._sync_failures_in_a_row = self._sync_failures_in_a_row + 1
        failures = self._sync_health.failures + 1
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
        elif in_a_row % _SYNC_LOG_EVERY == 0 or str(error) != self._sync_health.error:
            log.error("syncing this node's disk still fails (%d in a row): %s", in_a_row, error)
        self._sync_health = SyncHealth(failures, str(error))

    def _synced(self) -> None:
        if self._sync_failures_in_a_row:
            log.warning(
                "syncing this node's disk works again, after %d failed attempts",
                self._sync_failures_in_a_row,
            )
            self._sync_failures_in_a_row = 0
            self._sync_health = SyncHealth(self._sync_health.failures)
