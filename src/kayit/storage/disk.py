"""DiskManager: one file per message, ``messages/<id>.msg``, holding exactly the message bytes,
and beside them the pending copies, ``pending/<id>.<term>.<seq>.msg``: versions stored but not
yet committed, each promoted by renaming it over the committed file.

Synchronous on purpose: callers run it on a worker thread (see MessageStore), never on the
event loop. Every write replaces the file atomically (temp file in the same directory, then
rename), so a crash leaves the old message or the new one, never a torn file. A batch is written
in two steps, so that its caller can journal the batch in between: ``stage`` writes every new
file (temp files, and pending copies under their own names), ``install`` renames the temp files
over the committed ones. A step that fails removes what the batch wrote and nothing else, before
the error goes on: a full disk leaves no files behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from kayit.storage.naming import file_name, is_message_file, pending_file_name
from kayit.version import Version

log = logging.getLogger(__name__)

_BUFFER_SIZE = 64 * 1024
_TEMP_PREFIX = "."  # escaped names never start with '.', so temp files cannot clash
PENDING_DIR = "pending"


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2): one call makes every file of a file system durable. Syncing a
    batch of files that way measured 25-40x faster here than an fsync per file."""
    name = ctypes.util.find_library("c")
    syncfs = getattr(ctypes.CDLL(name, use_errno=True), "syncfs", None) if name else None
    return cast(Callable[[int], int], syncfs) if syncfs is not None else None


_SYNCFS = _load_syncfs()


class IoMode(enum.StrEnum):
    BUFFERED = "buffered"  # BufferedWriter/BufferedReader: few system calls per message
    UNBUFFERED = "unbuffered"  # raw file objects: every write and read goes to the kernel


class FsyncPolicy(enum.StrEnum):
    ALWAYS = "always"  # file and directory synced before a write returns
    EVERYSEC = "everysec"  # written files synced by sync_dirty(), called about once a second
    NEVER = "never"  # the kernel decides


@dataclass(slots=True)
class StagedFiles:
    """The files of one batch that ``DiskManager.stage`` wrote: none is named by a journal
    record yet, so ``DiskManager.discard`` may remove them all."""

    # Temp files in messages/ and the committed files each is to replace.
    renames: dict[Path, Path] = field(default_factory=dict)
    # Pending copies, written in place; ``new_pending`` those of them that were not there
    # before (a pending copy of the same version may be written again).
    pending: list[Path] = field(default_factory=list)
    new_pending: list[Path] = field(default_factory=list)


class DiskManager:
    def __init__(
        self,
        root: Path,
        io_mode: IoMode,
        fsync: FsyncPolicy,
        *,
        sync_timed: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        """``sync_timed`` is told how long each sync took (the node's metrics)."""
        self.directory = root / "messages"
        self.directory.mkdir(parents=True, exist_ok=True)
        # Made by the first pending copy, so that a node that never had one keeps the layout
        # of the releases before pending copies.
        self.pending_directory = root / PENDING_DIR
        self.io_mode = io_mode
        self.fsync = fsync
        self._dirty: set[Path] = set()
        self._sync_timed = sync_timed
        self._remove_stale_temp_files()

    def path(self, message_id: str) -> Path:
        return self.directory / file_name(message_id)

    def pending_path(self, message_id: str, version: Version) -> Path:
        return self.pending_directory / pending_file_name(message_id, version)

    def stage(
        self,
        committed: Iterable[tuple[str, bytes]],
        pending: Iterable[tuple[str, Version, bytes]],
    ) -> StagedFiles:
        """Write a batch's files where no reader looks yet: each committed (id, message) to a
        temp file beside the file it replaces, each pending (id, version, message) under its
        own name in pending/. Committed files stay as they are until ``install``.

        A pending copy needs no temp file: its name holds its version, so there is no older
        content to keep, and the checksum of its journal record refuses a file a crash cut
        short (a file without a record is removed at start). If a write fails, every file this
        call wrote is removed before the error is raised."""
        staged = StagedFiles()
        writing: list[Path] = []  # the pending file being written: torn if its write fails
        try:
            # An id written twice in one batch: only its last message counts.
            latest = {file_name(message_id): message for message_id, message in committed}
            for name, message in latest.items():
                temp = self.directory / (_TEMP_PREFIX + name)
                staged.renames[temp] = self.directory / name
                self._write_file(temp, message)
            files = {pending_file_name(key, version): data for key, version, data in pending}
            if files and not self.pending_directory.exists():
                self.pending_directory.mkdir()
                self._synced_by_policy([self.pending_directory])
            for name, message in files.items():
                path = self.pending_directory / name
                staged.pending.append(path)
                if not path.exists():
                    staged.new_pending.append(path)
                writing = [path]
                self._write_file(path, message)
            writing = []
            if self.fsync is FsyncPolicy.ALWAYS:
                # New bytes reach the disk before their names replace the old files, so a
                # crash can only leave the old message or the new one.
                self._sync([*staged.renames, *staged.pending])
        except BaseException:
            self._remove_staged(staged, torn=writing)
            raise
        if self.fsync is FsyncPolicy.EVERYSEC:
            self._dirty.update(staged.pending)
        return staged

    def install(self, staged: StagedFiles) -> int:
        """Rename the staged temp files over the committed files they replace, so that a
        crash leaves the old file or the new one; returns how many ids had no committed file
        before. If a rename fails, the temp files not renamed yet are removed before the
        error is raised."""
        created = 0
        renamed: list[Path] = []
        try:
            for temp, final in staged.renames.items():
                if not final.exists():
                    created += 1
                os.replace(temp, final)
                renamed.append(final)
        except BaseException:
            _remove(list(staged.renames)[len(renamed) :])
            if self.fsync is FsyncPolicy.EVERYSEC:
                self._dirty.update(renamed)
            raise
        self._synced_by_policy(renamed)
        return created

    def discard(self, staged: StagedFiles) -> None:
        """Remove what ``stage`` wrote, for a batch whose records could not be journaled:
        its temp files, and the pending copies it created (one written again over a copy
        that was there stays: its record still names it)."""
        self._remove_staged(staged, torn=[])

    def promote_many(self, copies: Iterable[tuple[str, Version]]) -> int:
        """Rename each pending copy over its id's committed file, so that a crash leaves the
        old file or the new one; returns how many ids had no committed file before."""
        created = 0
        moved: list[Path] = []
        for message_id, version in copies:
            source, final = self.pending_path(message_id, version), self.path(message_id)
            if not final.exists():
                created += 1
            os.replace(source, final)
            moved += [final, source]  # the source's directory loses an entry
        self._synced_by_policy(moved)
        return created

    def delete(self, message_id: str) -> bool:
        """Remove a message file; False if there was none."""
        return self._unlink(self.path(message_id))

    def delete_pending(self, message_id: str, version: Version) -> bool:
        """Remove a pending copy; False if there was none."""
        return self._unlink(self.pending_path(message_id, version))

    def read(self, message_id: str) -> bytes | None:
        return self._read(self.path(message_id))

    def read_pending(self, message_id: str, version: Version) -> bytes | None:
        return self._read(self.pending_path(message_id, version))

    def pending_names(self) -> list[str]:
        """The names of the files in pending/ (temp files aside)."""
        try:
            with os.scandir(self.pending_directory) as entries:
                return [e.name for e in entries if not e.name.startswith(_TEMP_PREFIX)]
        except FileNotFoundError:
            return []

    def count(self) -> int:
        with os.scandir(self.directory) as entries:
            return sum(1 for entry in entries if is_message_file(entry.name))

    def sync_dirty(self) -> None:
        """Push to stable storage every file written since the last good call
        (fsync=everysec); if this fails, the next call syncs them again."""
        if self._dirty:
            paths, self._dirty = self._dirty, set()
            try:
                self._sync(paths)
            except BaseException:
                self._dirty |= paths
                raise

    def _remove_staged(self, staged: StagedFiles, torn: list[Path]) -> None:
        """Remove the temp files and the new pending copies of ``staged``, and ``torn``: a
        pending file whose write failed, whatever it held before."""
        _remove(list(dict.fromkeys([*staged.renames, *staged.new_pending, *torn])))

    def _synced_by_policy(self, paths: list[Path]) -> None:
        if self.fsync is FsyncPolicy.ALWAYS:
            self._sync(paths)
        elif self.fsync is FsyncPolicy.EVERYSEC:
            self._dirty.update(paths)

    def _unlink(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        if self.fsync is FsyncPolicy.EVERYSEC:
            self._dirty.add(path)
        return True

    def _read(self, path: Path) -> bytes | None:
        try:
            if self.io_mode is IoMode.BUFFERED:
                with open(path, "rb", buffering=_BUFFER_SIZE) as reader:
                    return reader.read()
            with open(path, "rb", buffering=0) as raw:
                return raw.readall()
        except FileNotFoundError:
            return None

    def _write_file(self, path: Path, message: bytes) -> None:
        if self.io_mode is IoMode.BUFFERED:
            with open(path, "wb", buffering=_BUFFER_SIZE) as writer:
                writer.write(message)
            return
        with open(path, "wb", buffering=0) as raw:
            view = memoryview(message)
            while view:
                written = raw.write(view) or 0
                view = view[written:]

    def _sync(self, paths: Iterable[Path]) -> None:
        """Make the files, and the directory entries that name them, durable (a path gone by
        now is skipped, but its directory is still synced: it may be a removal or a rename)."""
        started = time.perf_counter()
        try:
            self._sync_files(paths)
        finally:
            self._sync_timed(time.perf_counter() - started)

    def _sync_files(self, paths: Iterable[Path]) -> None:
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            if _SYNCFS is not None and _SYNCFS(directory) == 0:
                return
        finally:
            os.close(directory)
        directories = set()
        for path in paths:
            directories.add(path.parent)
            _fsync(path)
        for parent in directories:
            _fsync(parent)

    def _remove_stale_temp_files(self) -> None:
        for directory in (self.directory, self.pending_directory):
            if directory.exists():
                for entry in directory.iterdir():
                    if entry.name.startswith(_TEMP_PREFIX):
                        entry.unlink(missing_ok=True)


def _remove(paths: list[Path]) -> None:
    """Remove the files of a batch that failed, while its error goes on: a file that cannot be
    removed either (the disk failing) is left to the next start, which removes it."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not remove %s after a failed write: %s", path, error)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
