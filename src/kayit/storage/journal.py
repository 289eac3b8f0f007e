"""The journal: an append-only record of every copy a node stored, so that what a node knows
about its copies (version, checksum, and on the leader the holders) survives a crash.

File format: records of ``<u32 body length><u32 crc32 of body><body>``, big-endian. A record
cut short by a crash fails its length or CRC and is dropped, with everything after it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from zlib import crc32

from kayit.storage.atomic import replace_durably
from kayit.version import Version

_FRAME = struct.Struct(">II")
_COPY = struct.Struct(">?QQIH")  # deleted, term, seq, checksum of the message, id length


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
        deleted, term, seq, checksum, key_length = _COPY.unpack_from(body)
        start = _COPY.size
        key = body[start : start + key_length].decode("utf-8")
        rest = body[start + key_length :].decode("utf-8")
        holders = tuple(rest.split("\n")) if rest else ()
        return cls(key, Version(term, seq), checksum, holders, deleted)


def checksum(message: bytes) -> int:
    return crc32(message)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def replay(self) -> dict[str, CopyRecord]:
        """The latest record of each copy still held. Drops a torn tail and compacts the file
        to one record per copy; afterwards the journal is open for appending."""
        latest: dict[str, CopyRecord] = {}
        total = 0
        bodies, torn = self._read_bodies()
        for body in bodies:
            record = CopyRecord.decode(body)
            current = latest.get(record.message_id)
            if current is None or current.version <= record.version:
                latest[record.message_id] = record
            total += 1
        latest = {key: record for key, record in latest.items() if not record.deleted}
        if torn or total != len(latest) or not self.path.exists():
            self._rewrite(latest.values())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return latest

    def append(self, records: Iterable[CopyRecord]) -> None:
        assert self._fd is not None, "replay() opens the journal"
        data = b"".join(_frame(record.encode()) for record in records)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _read_bodies(self) -> tuple[list[bytes], bool]:
        """The intact records, and whether anything followed them (a torn tail)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], False
        bodies = []
        position = 0
        while position + _FRAME.size <= len(data):
            length, expected = _FRAME.unpack_from(data, position)
            body = data[position + _FRAME.size : position + _FRAME.size + length]
            if len(body) < length or crc32(body) != expected:
                break  # torn by a crash: nothing after it was acknowledged
            bodies.append(body)
            position += _FRAME.size + length
        return bodies, position != len(data)

    def _rewrite(self, records: Iterable[CopyRecord]) -> None:
        replace_durably(self.path, b"".join(_frame(record.encode()) for record in records))


def _frame(body: bytes) -> bytes:
    return _FRAME.pack(len(body), crc32(body)) + body
