"""The journal: an append-only record of every copy a node stored, so that what a node knows
about its copies (version, checksum, and on the leader the holders) survives a crash.

File format: records of ``<u32 body length><u32 crc32 of body><body>``, big-endian (unchanged
since the first release). Replay keeps every record that passes its checks and goes on past
damage: after a record that fails them it looks, byte by byte, for the next offset where a whole
record passes again (a length in bounds, a matching CRC, a body that decodes). A record cut short
at the end of the file (a crash during an append) is dropped without alarm; damage anywhere else
is counted, and the damaged file is kept beside the journal.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from zlib import crc32

from kayit.storage.atomic import replace_durably
from kayit.version import Version

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">II")
_COPY = struct.Struct(">?QQIH")  # deleted, term, seq, checksum of the message, id length
# Bounds on a body: an id is at most 65,535 bytes and the holders are TOLERANCE addresses. A
# length outside them is damage, and resynchronisation needs them to reject most offsets cheaply.
_MIN_BODY = _COPY.size
_MAX_BODY = 256 * 1024


@dataclass(frozen=True, slots=True)
class CopyRecord:
    message_id: str
    version: Version
    checksum: int  # crc32 of the message bytes in the .msg file
    holders: tuple[str, ...] = ()  # on the leader: the members holding this version
    deleted: bool = False  # the copy of this version, and any older one, was removed

    def encode(self) -> bytes:
        key = self.message_id.encode("utf-8")
        term, seq = self.version
        parts = [
            _COPY.pack(self.deleted, term, seq, self.checksum, len(key)),
            key,
            "\n".join(self.holders).encode("utf-8"),
        ]
        return b"".join(parts)

    @classmethod
    def decode(cls, body: bytes) -> CopyRecord:
        """Raises ValueError (or struct.error) for a body no record encodes to."""
        deleted, term, seq, checksum, key_length = _COPY.unpack_from(body)
        start = _COPY.size
        if start + key_length > len(body):
            raise ValueError("the id runs past the end of the record")
        key = body[start : start + key_length].decode("utf-8")
        rest = body[start + key_length :].decode("utf-8")
        holders = tuple(rest.split("\n")) if rest else ()
        return cls(key, Version(term, seq), checksum, holders, deleted)


def checksum(message: bytes) -> int:
    return crc32(message)


@dataclass(frozen=True, slots=True)
class _Scan:
    records: list[CopyRecord]
    damaged: int  # stretches of damaged bytes skipped; each cost at least one record
    damaged_bytes: int
    end: int  # where the last good record ends: a torn tail starts here


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.damaged_copy = path.with_name(path.name + ".damaged")
        self.damaged = 0  # damaged records (at least) the last replay skipped
        # Records were lost to damage, at this replay or an earlier one (its damaged file is
        # kept until an operator removes it).
        self.lost_records = False
        self._fd: int | None = None
        self._end = 0  # the end of the last complete record: a failed append is cut back here
        self._torn = False  # an append failed and may have left part of a record

    def replay(self) -> dict[str, CopyRecord]:
        """The latest record of each copy still held. Skips damaged records, drops a torn tail
        and compacts the file to one record per copy; afterwards the journal is open for
        appending."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        scan = _scan(data)
        latest: dict[str, CopyRecord] = {}
        for record in scan.records:
            current = latest.get(record.message_id)
            if current is None or current.version <= record.version:
                latest[record.message_id] = record
        latest = {key: record for key, record in latest.items() if not record.deleted}
        self.damaged = scan.damaged
        if scan.damaged:
            log.warning(
                "%s: skipped %d damaged records (at least; %d bytes) and kept the rest; "
                "the damaged file is kept as %s",
                self.path,
                scan.damaged,
                scan.damaged_bytes,
                self.damaged_copy,
            )
            replace_durably(self.damaged_copy, data)  # before the compaction erases it
        self.lost_records = self.damaged_copy.exists()
        compact = scan.damaged or len(scan.records) != len(latest)
        if compact or scan.end != len(data) or not self.path.exists():
            self._rewrite(latest.values())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._end = os.fstat(self._fd).st_size
        return latest

    def append(self, records: Iterable[CopyRecord]) -> None:
        """Write whole records. If this fails part way (a full disk), the error is raised and
        the part written is cut off, here or before the next append, so that no record is
        ever written behind a torn one."""
        assert self._fd is not None, "replay() opens the journal"
        data = b"".join(_frame(record.encode()) for record in records)
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
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _cut_back(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, self._end)
        self._torn = False

    def _try_cut_back(self) -> None:
        try:
            self._cut_back()
        except OSError as error:
            log.error("%s: could not cut a failed append back: %s", self.path, error)

    def _rewrite(self, records: Iterable[CopyRecord]) -> None:
        replace_durably(self.path, b"".join(_frame(record.encode()) for record in records))


def _frame(body: bytes) -> bytes:
    if len(body) > _MAX_BODY:
        raise ValueError(f"a journal record of {len(body)} bytes is over {_MAX_BODY}")
    return _FRAME.pack(len(body), crc32(body)) + body


def _scan(data: bytes) -> _Scan:
    records: list[CopyRecord] = []
    damaged = damaged_bytes = 0
    position = 0
    while position < len(data):
        found = _record_at(data, position)
        if found is not None:
            records.append(found[0])
            position = found[1]
            continue
        following = _next_record(data, position + 1)
        if following is None:
            if not _torn(data[position:]):
                damaged += 1
                damaged_bytes += len(data) - position
            break
        damaged += 1
        damaged_bytes += following - position
        position = following
    return _Scan(records, damaged, damaged_bytes, position)


def _record_at(data: bytes, position: int) -> tuple[CopyRecord, int] | None:
    """The record at ``position`` and where it ends, if a whole one passes every check."""
    if position + _FRAME.size + _MIN_BODY > len(data):
        return None
    length, expected = _FRAME.unpack_from(data, position)
    start = position + _FRAME.size
    end = start + length
    if not _MIN_BODY <= length <= _MAX_BODY or end > len(data):
        return None
    body = data[start:end]
    if crc32(body) != expected:
        return None
    try:
        return CopyRecord.decode(body), end
    except (ValueError, struct.error):  # UnicodeDecodeError is a ValueError
        return None


def _next_record(data: bytes, start: int) -> int | None:
    for position in range(start, len(data) - _FRAME.size - _MIN_BODY + 1):
        if _record_at(data, position) is not None:
            return position
    return None


def _torn(tail: bytes) -> bool:
    """A tail with no good record after it, as a crash during an append leaves it: a record
    cut short (its length is plausible but runs past the end), or blocks the file system
    allocated but never wrote (zeros). Anything else is counted as damage."""
    if len(tail) < _FRAME.size or not tail.strip(b"\0"):
        return True
    length: int = _FRAME.unpack_from(tail)[0]
    return _MIN_BODY <= length <= _MAX_BODY and _FRAME.size + length > len(tail)
