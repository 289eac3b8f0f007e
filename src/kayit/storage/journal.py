"""The journal: an append-only record of every copy a node stored, so that what a node knows
about its copies (version, checksum, and on the leader the holders) survives a crash.

File format: records of ``<u32 body length><u32 crc32 of body><body>``, big-endian (unchanged
since the first release; framing, appending and reading are ``kayit.storage.records``). Each
record stands alone, so replay resynchronises past damage: it keeps every record that passes its
checks, a damaged stretch costs only the records it touches. A record cut short at the end of
the file (a crash during an append) is dropped without alarm; damage anywhere else is counted,
and the damaged file is kept beside the journal.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from zlib import crc32

from kayit.storage.atomic import replace_durably
from kayit.storage.records import OnDamage, RecordFormat, RecordWriter, scan
from kayit.version import Version

log = logging.getLogger(__name__)

_COPY = struct.Struct(">?QQIH")  # deleted, term, seq, checksum of the message, id length
# Bounds on a body: an id is at most 65,535 bytes and the holders are TOLERANCE addresses. A
# length outside them is damage, and resynchronisation needs them to reject most offsets cheaply.
_JOURNAL = RecordFormat(min_body=_COPY.size, max_body=256 * 1024)


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


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.damaged_copy = path.with_name(path.name + ".damaged")
        self.damaged = 0  # damaged records (at least) the last replay skipped
        # Records were lost to damage, at this replay or an earlier one (its damaged file is
        # kept until an operator removes it).
        self.lost_records = False
        self._writer: RecordWriter | None = None

    def replay(self) -> dict[str, CopyRecord]:
        """The latest record of each copy still held. Skips damaged records, drops a torn tail
        and compacts the file to one record per copy; afterwards the journal is open for
        appending."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        found = scan(data, _JOURNAL, CopyRecord.decode, OnDamage.RESYNC)
        latest: dict[str, CopyRecord] = {}
        for record in found.records:
            current = latest.get(record.message_id)
            if current is None or current.version <= record.version:
                latest[record.message_id] = record
        latest = {key: record for key, record in latest.items() if not record.deleted}
        self.damaged = found.damaged
        if found.damaged:
            log.warning(
                "%s: skipped %d damaged records (at least; %d bytes) and kept the rest; "
                "the damaged file is kept as %s",
                self.path,
                found.damaged,
                found.damaged_bytes,
                self.damaged_copy,
            )
            replace_durably(self.damaged_copy, data)  # before the compaction erases it
        self.lost_records = self.damaged_copy.exists()
        compact = found.damaged or len(found.records) != len(latest)
        if compact or found.end != len(data) or not self.path.exists():
            self._rewrite(latest.values())
        self._writer = RecordWriter(self.path, _JOURNAL)
        return latest

    def append(self, records: Iterable[CopyRecord]) -> None:
        """Write whole records. If this fails part way (a full disk), the error is raised and
        the part written is cut off, here or before the next append, so that no record is
        ever written behind a torn one."""
        assert self._writer is not None, "replay() opens the journal"
        self._writer.append(record.encode() for record in records)

    def sync(self) -> None:
        if self._writer is not None:
            self._writer.sync()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _rewrite(self, records: Iterable[CopyRecord]) -> None:
        replace_durably(self.path, _JOURNAL.frames(record.encode() for record in records))


def _frame(body: bytes) -> bytes:
    return _JOURNAL.frame(body)
