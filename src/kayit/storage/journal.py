"""The journal: an append-only record of every copy a node stored, so that what a node knows
about its copies (version, checksum, and on the leader the holders) survives a crash. A record
is of a committed copy, or of a pending one (a version stored but not committed yet); a pending
copy stays known until a record drops it or a committed one of its id at least as new.

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

_COPY = struct.Struct(">BQQIH")  # flags, term, seq, checksum of the message, id length
# The flags byte held only ``deleted`` (0 or 1) before pending copies, so old records read the
# same. A pending record ends with a byte that is never UTF-8 where other records keep their
# holders: a kayit from before pending copies takes it for damage and skips it, instead of
# reading its flag as ``deleted`` and dropping the committed copy of its id.
_DELETED = 1
_PENDING = 2
_PENDING_END = b"\xff"
# Bounds on a body: an id is at most 65,535 bytes and the holders are TOLERANCE addresses. A
# length outside them is damage, and resynchronisation needs them to reject most offsets cheaply.
_JOURNAL = RecordFormat(min_body=_COPY.size, max_body=256 * 1024)


@dataclass(frozen=True, slots=True)
class CopyRecord:
    message_id: str
    version: Version
    checksum: int  # crc32 of the message bytes in the .msg file
    holders: tuple[str, ...] = ()  # on the leader: the members holding this version
    # The copy of this version, and any older one, was removed; for a pending record, the
    # pending copy of exactly this version.
    deleted: bool = False
    pending: bool = False  # a pending copy (it never has holders)

    def encode(self) -> bytes:
        key = self.message_id.encode("utf-8")
        term, seq = self.version
        flags = (_DELETED if self.deleted else 0) | (_PENDING if self.pending else 0)
        rest = _PENDING_END if self.pending else "\n".join(self.holders).encode("utf-8")
        return b"".join([_COPY.pack(flags, term, seq, self.checksum, len(key)), key, rest])

    @classmethod
    def decode(cls, body: bytes) -> CopyRecord:
        """Raises ValueError (or struct.error) for a body no record encodes to."""
        flags, term, seq, checksum, key_length = _COPY.unpack_from(body)
        if flags & ~(_DELETED | _PENDING):
            raise ValueError(f"unknown flags {flags:#x}")
        start = _COPY.size
        if start + key_length > len(body):
            raise ValueError("the id runs past the end of the record")
        key = body[start : start + key_length].decode("utf-8")
        deleted, pending = bool(flags & _DELETED), bool(flags & _PENDING)
        if pending:
            if body[start + key_length :] != _PENDING_END:
                raise ValueError("a pending record must end with its marker")
            return cls(key, Version(term, seq), checksum, (), deleted, pending)
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
        # The pending copies the last replay found. Replay takes the records in order, as they
        # happened: a committed one drops the pending copies of its id up to its version.
        self.pending: list[CopyRecord] = []
        self._writer: RecordWriter | None = None

    def replay(self) -> dict[str, CopyRecord]:
        """The latest record of each committed copy still held (``pending`` gets the pending
        ones). Skips damaged records, drops a torn tail and compacts the file to one record per
        copy; afterwards the journal is open for appending."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        found = scan(data, _JOURNAL, CopyRecord.decode, OnDamage.RESYNC)
        latest: dict[str, CopyRecord] = {}
        pending: dict[str, dict[Version, CopyRecord]] = {}
        for record in found.records:
            key = record.message_id
            if record.pending:
                versions = pending.setdefault(key, {})
                if record.deleted:
                    versions.pop(record.version, None)
                else:
                    versions[record.version] = record
                continue
            current = latest.get(key)
            if current is None or current.version <= record.version:
                latest[key] = record
            if not record.deleted and key in pending:
                _drop_up_to(pending[key], record.version)
        latest = {key: record for key, record in latest.items() if not record.deleted}
        self.pending = [record for versions in pending.values() for record in versions.values()]
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
        compact = found.damaged or len(found.records) != len(latest) + len(self.pending)
        if compact or found.end != len(data) or not self.path.exists():
            self._rewrite([*latest.values(), *self.pending])
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


def _drop_up_to(versions: dict[Version, CopyRecord], committed: Version) -> None:
    """A committed copy makes the pending copies of its id up to its version garbage."""
    for version in [version for version in versions if version <= committed]:
        del versions[version]


def _frame(body: bytes) -> bytes:
    return _JOURNAL.frame(body)
