"""Materializer: writes committed copies from the copy log into their ``messages/<id>.msg``
files, on a thread of its own, behind the acknowledgements.

The copies waiting for their files are the backlog. Their bytes stay in memory until their file
is written, so a GET finds them; once the file is synced too (by the fsync policy), the log
record they came from is released, and its segment can go. A newer copy of an id replaces the
one waiting, so an id written many times is written to its file once. Files are overwritten in
place: a crash part way leaves a torn file, which the next start writes again from the log (its
record was not released yet).

Every change to a message file goes through here (``delete`` too), so that no file is written
after its id was deleted; a copy leaves the backlog only once its file is written, so a reader
that finds no copy waiting finds the file written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kayit.storage.copylog import CopyLog
from kayit.storage.disk import DiskManager, FsyncPolicy

log = logging.getLogger(__name__)

_RETRY_AFTER = 1.0  # seconds between attempts while files cannot be written (a full disk)
_SYNC_INTERVAL = 1.0  # fsync=everysec


@dataclass(frozen=True, slots=True)
class BacklogLimit:
    """When the backlog holds this many copies or bytes, new stores wait (back-pressure).
    ``records`` is the most; the bound in force is what this disk writes in ``drain_seconds``
    at the rate measured while writing (``DrainRate``), never under ``min_records``: the
    file-create rate swings from ~2,000 to ~40,000 a second on the test machines, and a full
    backlog should drain in about two seconds whatever the disk does."""

    records: int = 10_000
    size_bytes: int = 64 * 1024 * 1024
    drain_seconds: float = 2.0
    min_records: int = 500

    def bound(self, files_per_second: float | None) -> int:
        """The record bound in force at the measured rate (``records`` before any)."""
        if files_per_second is None:
            return self.records
        drained = max(self.min_records, int(files_per_second * self.drain_seconds))
        return min(self.records, drained)


class DrainRate:
    """Files written per second of writing (idle time not counted), over windows of at least
    ``window`` seconds of writing, smoothed: one slow or fast batch moves it only a little."""

    def __init__(self, window: float = 0.1, smoothing: float = 0.3) -> None:
        self.per_second: float | None = None
        self._window = window
        self._smoothing = smoothing
        self._files = 0
        self._seconds = 0.0

    def observe(self, files: int, seconds: float) -> None:
        self._files += files
        self._seconds += seconds
        if self._seconds < self._window:
            return
        rate = self._files / self._seconds
        self._files, self._seconds = 0, 0.0
        if self.per_second is None:
            self.per_second = rate
        else:
            self.per_second += self._smoothing * (rate - self.per_second)


DEFAULT_BACKLOG = BacklogLimit()


@dataclass(frozen=True, slots=True, eq=False)
class _Waiting:
    message: bytes
    segment: int  # of its copy log record, released once the file is synced


class Materializer:
    def __init__(
        self,
        disk: DiskManager,
        copy_log: CopyLog,
        limit: BacklogLimit,
        on_progress: Callable[[], None],
    ) -> None:
        self._disk = disk
        self._log = copy_log
        self.limit = limit
        self._on_progress = on_progress  # called on the materializer's thread
        self._waiting: dict[str, _Waiting] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._writing: str | None = None  # the id whose file is being written, if any
        self._written = threading.Condition(self._lock)
        self._stopping = False
        self.failure = ""  # why files cannot be written now; "" while they can
        self.failures = 0  # attempts to write or sync files that failed, since the start
        # Files written and not synced yet, with the log segment of their record.
        self._unsynced: list[tuple[Path, int]] = []
        self._synced_at = time.monotonic()
        self.drain_rate = DrainRate()
        self._thread = threading.Thread(target=self._run, name="kayit-materialize", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is waiting, then end the thread (blocks)."""
        with self._lock:
            self._stopping = True
            self._work.notify()
        if self._thread.ident is not None:  # started
            self._thread.join()

    @property
    def records(self) -> int:
        return len(self._waiting)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def bound(self) -> int:
        """The backlog's record bound in force (``BacklogLimit.bound``)."""
        return self.limit.bound(self.drain_rate.per_second)

    def full(self) -> bool:
        return len(self._waiting) >= self.bound() or self._bytes >= self.limit.size_bytes

    def add(self, copies: list[tuple[str, bytes, int]]) -> None:
        """Queue (id, message, log segment) for their files; each takes over its record's
        reference on the segment."""
        with self._lock:
            for message_id, message, segment in copies:
                self._forget(message_id)
                self._waiting[message_id] = _Waiting(message, segment)
                self._bytes += len(message)
            self._work.notify()

    def waiting(self, message_id: str) -> bytes | None:
        """The bytes of the id's copy still waiting for its file, if one is (no lock: a dict
        lookup is atomic, and an entry leaves only once its file is written)."""
        entry = self._waiting.get(message_id)
        return entry.message if entry is not None else None

    def read(self, message_id: str) -> bytes | None:
        """The id's committed bytes, waiting or from its file, never a file half written."""
        with self._lock:
            entry = self._waiting.get(message_id)
            return entry.message if entry is not None else self._disk.read(message_id)

    def delete(self, message_id: str) -> bool:
        """Remove the id's file and any copy waiting for it; False if there was no file.
        Waits for the file if it is being written, so that no write comes after."""
        with self._lock:
            while self._writing == message_id:
                self._written.wait()
            self._forget(message_id)
            return self._disk.delete(message_id)

    def _forget(self, message_id: str) -> None:
        old = self._waiting.pop(message_id, None)
        if old is not None:
            self._bytes -= len(old.message)
            self._log.release(old.segment)

    def _run(self) -> None:
        failing = False
        while True:
            with self._lock:
                while not self._waiting and not self._stopping and not self._sync_due():
                    self._work.wait(self._until_sync())
                batch = list(self._waiting.items())
                stopping = self._stopping
            try:
                self._write(batch)
                if self._unsynced and (stopping or self._sync_due()):
                    self._sync()
            except OSError as error:
                self.failure = str(error)
                self.failures += 1
                self._on_progress()  # stores waiting for room learn that none is coming
                if not failing:
                    log.error(
                        "writing message files failed: %s; the copies stay in the log and "
                        "memory, new ones wait, trying again every second",
                        error,
                    )
                failing = True
                with self._lock:
                    if self._stopping:
                        log.error(
                            "stopping with %d copies not in their files: the next start "
                            "writes them from the log",
                            len(self._waiting),
                        )
                        return
                    self._work.wait(_RETRY_AFTER)
                continue
            if failing:
                log.warning("writing message files works again")
                failing = False
                self.failure = ""
            self._on_progress()
            if stopping and not self._waiting and not self._unsynced:
                return

    def _write(self, batch: list[tuple[str, _Waiting]]) -> None:
        """Write each file in place, outside the lock (a slow disk holds up no store); a copy
        leaves the backlog with its file written, and keeps its log record until the file is
        synced. One replaced meanwhile stays, for the next batch."""
        started, written = time.monotonic(), 0
        for message_id, entry in batch:
            with self._lock:
                if self._waiting.get(message_id) is not entry:
                    continue  # replaced or deleted meanwhile
                self._writing = message_id
            try:
                self._disk.write(message_id, entry.message)
                written += 1
            finally:
                with self._lock:
                    self._writing = None
                    self._written.notify_all()
            with self._lock:
                if self._waiting.get(message_id) is entry:
                    del self._waiting[message_id]
                    self._bytes -= len(entry.message)
                    self._unsynced.append((self._disk.path(message_id), entry.segment))
        self.drain_rate.observe(written, time.monotonic() - started)

    def _sync(self) -> None:
        """Sync the files written (by the fsync policy), then release their log records."""
        written, self._unsynced = self._unsynced, []
        try:
            self._disk.sync_written([path for path, _ in written])
        except BaseException:
            self._unsynced = written + self._unsynced
            raise
        self._synced_at = time.monotonic()
        for _, segment in written:
            self._log.release(segment)

    def _sync_due(self) -> bool:
        """Under fsync=everysec files are synced once a second, as the logs are: a sync flushes
        the whole file system here (syncfs), which is costly to do after every batch."""
        return bool(self._unsynced) and self._until_sync() == 0

    def _until_sync(self) -> float | None:
        if not self._unsynced:
            return None
        if self._disk.fsync is not FsyncPolicy.EVERYSEC:
            return 0
        return max(0.0, self._synced_at + _SYNC_INTERVAL - time.monotonic())
