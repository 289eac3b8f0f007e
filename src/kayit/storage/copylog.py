"""CopyLog: the node's write-ahead log of message bytes, in ``copylog/<n>.log`` segments.

A copy is durable once its record (id, version, checksum, bytes) is in the log and synced by the
fsync policy: no file is created per copy on the way to the acknowledgement. The journal says
which copies exist; the log holds their bytes until the committed ones are in their
``messages/<id>.msg`` files (see Materializer) and the pending ones are promoted or dropped.

Records are framed as the journal's (``kayit.storage.records``), each standing alone, so a
damaged record costs only itself. A segment is appended to until it holds about
``segment_bytes``; the next one is started then, and at every open, so that a segment a crash
cut short is never appended to. Each record holds a reference on its segment while the store
still needs it; a segment that is not the head and holds none is deleted: how far the message
files are synced is recorded by which segments are left.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from zlib import crc32

from kayit.storage.atomic import sync_directory
from kayit.storage.records import OnDamage, RecordFormat, RecordWriter, scan
from kayit.version import Version

log = logging.getLogger(__name__)

LOG_DIR = "copylog"
SEGMENT_BYTES = 16 * 1024 * 1024
_SUFFIX = ".log"
_COPY = struct.Struct(">QQIH")  # term, seq, checksum of the message, id length
_FORMAT = RecordFormat(min_body=_COPY.size + 1, max_body=2**32 - 1)


@dataclass(frozen=True, slots=True)
class LoggedCopy:
    message_id: str
    version: Version
    checksum: int  # crc32 of ``message``
    message: bytes

    def encode(self) -> bytes:
        key = self.message_id.encode("utf-8")
        term, seq = self.version
        return b"".join([_COPY.pack(term, seq, self.checksum, len(key)), key, self.message])

    @classmethod
    def decode(cls, body: bytes) -> LoggedCopy:
        """Raises ValueError (or struct.error) for a body no record encodes to."""
        term, seq, checksum, key_length = _COPY.unpack_from(body)
        start = _COPY.size
        if not 0 < key_length <= len(body) - start:
            raise ValueError("the id runs past the end of the record")
        key = body[start : start + key_length].decode("utf-8")
        message = body[start + key_length :]
        if crc32(message) != checksum:
            raise ValueError("the message does not match its checksum")
        return cls(key, Version(term, seq), checksum, message)


class CopyLog:
    """Appended and synced by one thread; ``hold`` and ``release`` may come from any."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.damaged = 0  # damaged stretches the last open skipped (each cost a record or more)
        self._lock = threading.Lock()
        self._refs: Counter[int] = Counter()
        self._segments: set[int] = set()
        self._head = 0
        self._writer: RecordWriter | None = None
        self._head_size = 0
        self._collecting = False  # segments are deleted only once the store said what it holds

    def open(self) -> list[tuple[int, LoggedCopy]]:
        """Every good record of every segment, in order, with its segment; then a new head
        segment is started. A torn last record is dropped; a damaged one is skipped and
        counted (``damaged``)."""
        self.directory.mkdir(exist_ok=True)
        found: list[tuple[int, LoggedCopy]] = []
        for segment in sorted(self._existing()):
            path = self._path(segment)
            result = scan(path.read_bytes(), _FORMAT, LoggedCopy.decode, OnDamage.RESYNC)
            found += [(segment, copy) for copy in result.records]
            if result.damaged:
                self.damaged += result.damaged
                log.warning(
                    "%s: skipped %d damaged records (at least; %d bytes) and kept the rest",
                    path,
                    result.damaged,
                    result.damaged_bytes,
                )
            self._segments.add(segment)
        self._start_segment(max(self._segments, default=0) + 1)
        return found

    def append(self, copies: list[LoggedCopy]) -> int:
        """Write the records (not synced yet); returns their segment, which each holds a
        reference on until ``release``."""
        assert self._writer is not None, "open() starts the log"
        data = [copy.encode() for copy in copies]
        self._writer.append(data)
        segment = self._head
        with self._lock:
            self._refs[segment] += len(copies)
        self._head_size += sum(len(body) for body in data)
        if self._head_size >= self.segment_bytes:
            self._writer.sync()  # the next sync only knows the new head
            self._writer.close()
            self._start_segment(segment + 1)
        return segment

    def sync(self) -> None:
        if self._writer is not None:
            self._writer.sync()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def hold(self, segment: int) -> None:
        """One more record of ``segment`` is needed (found again by ``open``)."""
        with self._lock:
            self._refs[segment] += 1

    def release(self, segment: int) -> None:
        """A record of ``segment`` is needed no more; the segment goes with its last one."""
        with self._lock:
            self._refs[segment] -= 1
            if self._refs[segment] <= 0:
                del self._refs[segment]
                self._delete_unneeded()

    def collect(self) -> None:
        """Delete the segments no record holds (after ``open`` and its ``hold`` calls)."""
        with self._lock:
            self._collecting = True
            self._delete_unneeded()

    @property
    def segments(self) -> int:
        with self._lock:
            return len(self._segments)

    def _delete_unneeded(self) -> None:
        if not self._collecting:
            return
        for segment in [s for s in self._segments if s != self._head and not self._refs[s]]:
            self._refs.pop(segment, None)
            try:
                self._path(segment).unlink(missing_ok=True)
            except OSError as error:  # tried again with the next segment that goes
                log.warning("could not delete %s: %s", self._path(segment), error)
                continue
            self._segments.discard(segment)

    def _start_segment(self, segment: int) -> None:
        path = self._path(segment)
        path.touch()
        sync_directory(self.directory)
        self._writer = RecordWriter(path, _FORMAT)
        self._head_size = 0
        with self._lock:
            self._head = segment
            self._segments.add(segment)
            self._delete_unneeded()

    def _existing(self) -> list[int]:
        return [
            int(path.name.removesuffix(_SUFFIX))
            for path in self.directory.iterdir()
            if path.name.endswith(_SUFFIX) and path.name.removesuffix(_SUFFIX).isdigit()
        ]

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}{_SUFFIX}"
