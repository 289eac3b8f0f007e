"""Append-only files of CRC-checked records: the framing the journal and the Raft log share.

A record is ``<u32 body length><u32 crc32 of body><body>``, big-endian (the journal's format
since its first release). Each kind of file bounds the length of its bodies: a length outside
the bounds is damage, and resynchronisation relies on them to reject most offsets cheaply.

Reading follows one of two damage policies. RESYNC, for files whose records stand alone (the
journal), keeps every record that passes its checks: after one that fails them it looks, byte
by byte, for the next offset where a whole record passes again (a length in bounds, a matching
CRC, a body that decodes). STOP, for files whose records build on those before them (the Raft
log), keeps only what precedes the first bad record. Under both, a tail that looks like an
append cut short by a crash is dropped without being counted as damage.

Appending writes a batch of records with one system call; if that fails part way (a full
disk), the part written is cut off, at once or before the next append, so that no record is
ever written behind a torn one.
"""

from __future__ import annotations

import enum
import logging
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from zlib import crc32

log = logging.getLogger(__name__)

T = TypeVar("T")

_FRAME = struct.Struct(">II")
FRAME_SIZE = _FRAME.size


class OnDamage(enum.Enum):
    RESYNC = "resync"  # skip a damaged stretch, go on at the next whole record
    STOP = "stop"  # keep only the records before the first bad one


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """The body lengths one kind of file allows."""

    min_body: int
    max_body: int

    def frame(self, body: bytes) -> bytes:
        if not self.min_body <= len(body) <= self.max_body:
            raise ValueError(
                f"a record of {len(body)} bytes is outside {self.min_body}..{self.max_body}"
            )
        return _FRAME.pack(len(body), crc32(body)) + body

    def frames(self, bodies: Iterable[bytes]) -> bytes:
        return b"".join(self.frame(body) for body in bodies)


@dataclass(frozen=True, slots=True)
class Scan(Generic[T]):
    records: list[T]
    damaged: int  # stretches of damaged bytes skipped; each cost at least one record
    damaged_bytes: int
    end: int  # where the last good record ends: a torn tail, or under STOP damage, starts here


def scan(
    data: bytes, fmt: RecordFormat, decode: Callable[[bytes], T], on_damage: OnDamage
) -> Scan[T]:
    """The records of ``data`` in order. ``decode`` raises ValueError (or struct.error) for a
    body no record encodes to; any other exception it raises stops the scan and propagates."""
    records: list[T] = []
    damaged = damaged_bytes = 0
    position = 0
    while position < len(data):
        found = record_at(data, position, fmt, decode)
        if found is not None:
            records.append(found[0])
            position = found[1]
            continue
        following = None
        if on_damage is OnDamage.RESYNC:
            following = _next_record(data, position + 1, fmt, decode)
        if following is None:
            if not _torn(data[position:], fmt):
                damaged += 1
                damaged_bytes += len(data) - position
            break
        damaged += 1
        damaged_bytes += following - position
        position = following
    return Scan(records, damaged, damaged_bytes, position)


def record_at(
    data: bytes, position: int, fmt: RecordFormat, decode: Callable[[bytes], T]
) -> tuple[T, int] | None:
    """The record at ``position`` and where it ends, if a whole one passes every check (a file
    that starts with one record, followed by other bytes, reads it with this)."""
    if position + FRAME_SIZE + fmt.min_body > len(data):
        return None
    length, expected = _FRAME.unpack_from(data, position)
    start = position + FRAME_SIZE
    end = start + length
    if not fmt.min_body <= length <= fmt.max_body or end > len(data):
        return None
    body = data[start:end]
    if crc32(body) != expected:
        return None
    try:
        return decode(body), end
    except (ValueError, struct.error):  # UnicodeDecodeError is a ValueError
        return None


def _next_record(
    data: bytes, start: int, fmt: RecordFormat, decode: Callable[[bytes], T]
) -> int | None:
    for position in range(start, len(data) - FRAME_SIZE - fmt.min_body + 1):
        if record_at(data, position, fmt, decode) is not None:
            return position
    return None


def _torn(tail: bytes, fmt: RecordFormat) -> bool:
    """A tail with no good record after it, as a crash during an append leaves it: a record
    cut short (its length is plausible but runs past the end), or blocks the file system
    allocated but never wrote (zeros). Anything else is counted as damage."""
    if len(tail) < FRAME_SIZE or not tail.strip(b"\0"):
        return True
    length: int = _FRAME.unpack_from(tail)[0]
    return fmt.min_body <= length <= fmt.max_body and FRAME_SIZE + length > len(tail)


class RecordWriter:
    """Appends records to an existing file that ends with a whole record (or is empty).
    Not thread-safe: one thread appends, syncs and closes."""

    def __init__(self, path: Path, fmt: RecordFormat) -> None:
        self.path = path
        self._format = fmt
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._end = os.fstat(self._fd).st_size  # after the last whole record
        self._torn = False  # an append failed and may have left part of a record

    def append(self, bodies: Iterable[bytes]) -> None:
        """Write whole records, in one system call unless the kernel takes fewer bytes. If
        this fails part way, the error is raised and the part written is cut off."""
        data = self._format.frames(bodies)
        if self._torn:
            self._cut_back()
        self._torn = True
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            self._try_cut_back()
            raise
        self._torn = False
        self._end += len(data)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def _cut_back(self) -> None:
        os.ftruncate(self._fd, self._end)
        self._torn = False

    def _try_cut_back(self) -> None:
        try:
            self._cut_back()
        except OSError as error:
            log.error("%s: could not cut a failed append back: %s", self.path, error)
