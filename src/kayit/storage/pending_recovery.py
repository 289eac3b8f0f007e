"""Bring the pending copies the journal names and the files in ``pending/`` back into agreement
at start, finishing or forgetting what a crash cut short.

A promotion renames the pending file over the committed one and then journals the committed
record. A crash in between leaves the new bytes in ``messages/`` under the old record; the
reverse order, which a power loss can leave under a relaxed fsync policy, leaves the record of
the new version with its file still in ``pending/``. Both are finished here, so that a promotion
is found either undone or done. Whatever else disagrees is garbage of a write cut short: a
pending record without its file is dropped, a file without its record removed.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from kayit.storage.disk import DiskManager
from kayit.storage.journal import CopyRecord, Journal, checksum
from kayit.storage.naming import pending_file_name, pending_version
from kayit.version import Version

log = logging.getLogger(__name__)


def recover_pending(
    disk: DiskManager, journal: Journal, committed: dict[str, CopyRecord]
) -> dict[str, dict[Version, int]]:
    """Runs after ``journal.replay()`` returned ``committed``, which gains the promotions
    finished here; returns the pending copies held, id -> version -> checksum."""
    files = set(disk.pending_names())
    held: dict[str, dict[Version, int]] = defaultdict(dict)
    missing: dict[str, list[CopyRecord]] = defaultdict(list)
    for record in journal.pending:
        name = pending_file_name(record.message_id, record.version)
        if name in files:
            files.discard(name)
            held[record.message_id][record.version] = record.checksum
        else:
            missing[record.message_id].append(record)
    finished: list[CopyRecord] = []
    dropped: list[CopyRecord] = []
    for key, records in missing.items():
        promoted = _renamed_without_record(disk, committed.get(key), records)
        if promoted is not None:
            finished.append(promoted)
            committed[key] = promoted
            for version in [v for v in held.get(key, {}) if v <= promoted.version]:
                del held[key][version]
                files.add(pending_file_name(key, version))  # now garbage: removed below
        dropped += [
            CopyRecord(key, r.version, r.checksum, deleted=True, pending=True)
            for r in records
            if promoted is None or r.version != promoted.version
        ]
    _finish_or_remove(disk, files, committed)
    if finished or dropped:
        journal.append([*finished, *dropped])
        log.warning(
            "pending copies after a crash: %d promotions finished, %d copies never written",
            len(finished),
            len(dropped),
        )
    return {key: versions for key, versions in held.items() if versions}


def _renamed_without_record(
    disk: DiskManager, committed: CopyRecord | None, records: list[CopyRecord]
) -> CopyRecord | None:
    """The promotion whose rename reached the disk and whose record did not: the committed
    file holds the bytes of a pending copy whose file is gone. When the committed record
    matches those bytes too (a value set twice), nothing shows a rename: the old record stays,
    and the pending copy is taken for never written, which costs nothing but a repair."""
    message = disk.read(records[0].message_id)
    if message is None:
        return None
    found = checksum(message)
    if committed is not None and committed.checksum == found:
        return None
    for record in sorted(records, key=lambda r: r.version, reverse=True):
        if record.checksum == found:
            return CopyRecord(record.message_id, record.version, record.checksum)
    return None


def _finish_or_remove(disk: DiskManager, names: set[str], committed: dict[str, CopyRecord]) -> None:
    """Files in pending/ no pending record names: a promotion journaled but not renamed is
    finished (its bytes match the committed record of its id and version), the rest removed."""
    by_version: dict[Version, set[str]] = defaultdict(set)
    for name in names:
        version = pending_version(name)
        if version is not None:
            by_version[version].add(name)
    renames: list[tuple[str, Version]] = []
    if by_version:  # only after a crash: one pass over the committed copies
        for key, record in committed.items():
            candidates = by_version.get(record.version)
            if candidates and (name := pending_file_name(key, record.version)) in candidates:
                message = disk.read_pending(key, record.version)
                if message is not None and checksum(message) == record.checksum:
                    renames.append((key, record.version))
                    names.discard(name)
    if renames:
        disk.promote_many(renames)
    for name in names:
        (disk.pending_directory / name).unlink(missing_ok=True)
