"""Bring the journal, the copy log and the message files back into agreement at start.

The journal says which copies exist; the copy log holds the bytes of those whose files may not
be written yet. Every committed copy the log holds is written to its file unless the file holds
its bytes already (the materializer had not reached it, or a crash tore it), so every
acknowledged message has its file after a restart. Every pending copy the journal names is held
again with its bytes from the log; one whose bytes are gone (a record a crash or damage cost)
is dropped, as a copy never written, and the leader has it made again.

Pending copies of the releases before the copy log were files in ``pending/``: they are read
from there (and logged again by the caller).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kayit.storage.copylog import LoggedCopy
from kayit.storage.disk import DiskManager
from kayit.storage.journal import CopyRecord, Journal, checksum
from kayit.storage.naming import pending_file_name
from kayit.version import Version

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Recovered:
    # (id, version) -> (bytes, segment of their log record)
    pending: dict[tuple[str, Version], tuple[bytes, int]] = field(default_factory=dict)
    # Pending copies found in pending/, not in the log yet.
    legacy: list[LoggedCopy] = field(default_factory=list)
    files_written: int = 0


def recover_copies(
    disk: DiskManager,
    journal: Journal,
    committed: dict[str, CopyRecord],
    logged: list[tuple[int, LoggedCopy]],
) -> Recovered:
    """Runs after ``journal.replay()`` returned ``committed`` and the log's ``open`` returned
    ``logged``."""
    found: dict[tuple[str, Version, int], tuple[bytes, int]] = {}
    for segment, copy in logged:
        found[copy.message_id, copy.version, copy.checksum] = (copy.message, segment)
    recovered = Recovered()
    written = []
    for (key, version, expected), (message, _) in found.items():
        record = committed.get(key)
        if record is None or (record.version, record.checksum) != (version, expected):
            continue
        on_disk = disk.read(key)
        if on_disk is None or checksum(on_disk) != expected:
            disk.write(key, message)
            written.append(disk.path(key))
    disk.sync_written(written)
    recovered.files_written = len(written)
    legacy_files = set(disk.pending_names())
    dropped: list[CopyRecord] = []
    for record in journal.pending:
        key, version = record.message_id, record.version
        logged_copy = found.get((key, version, record.checksum))
        if logged_copy is not None:
            recovered.pending[key, version] = logged_copy
            continue
        name = pending_file_name(key, version)
        legacy = disk.read_legacy_pending(name) if name in legacy_files else None
        if legacy is not None and checksum(legacy) == record.checksum:
            recovered.legacy.append(LoggedCopy(key, version, record.checksum, legacy))
        else:
            dropped.append(CopyRecord(key, version, record.checksum, deleted=True, pending=True))
    if dropped:
        journal.append(dropped)
        log.warning("%d pending copies had no bytes left in the log; dropped", len(dropped))
    return recovered
