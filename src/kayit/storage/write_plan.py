"""What a batch of writes does to one node's copies, decided before any of it reaches the disk.

The writer thread plans a batch against the copies it knows, then carries the plan out: the new
bytes (pending copies, committed ones) appended to the copy log, the records (the promotions'
too) to the journal, then what the store knows, and the committed copies handed to the
materializer for their files. Only the last bytes of an id's committed copy are written to its
file, so every id gets the outcome its writes would have one by one, whatever else shares the
batch.

The rules: a committed copy is replaced by a version at least as new; a pending copy must be
newer than the committed one; a promotion needs the pending copy of its version; and a
committed copy makes the pending copies of its id up to its version garbage.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kayit.storage.journal import CopyRecord
from kayit.version import UNKNOWN, Version

Copy = tuple[Version, int]  # (version, checksum)


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    stored: bool  # False: refused, and the committed copy (of version ``current``) stays
    current: Version


class WriteKind(enum.Enum):
    COMMITTED = "committed"  # a put, or with no message a new record for a committed copy
    PENDING = "pending"
    PROMOTE = "promote"  # only the record's id and version count


@dataclass(frozen=True, slots=True)
class Write:
    kind: WriteKind
    record: CopyRecord
    message: bytes | None


@dataclass(slots=True)
class WritePlan:
    outcomes: list[StoreOutcome] = field(default_factory=list)
    # To the journal, in the order of the writes: replay takes the last record of an id.
    records: list[CopyRecord] = field(default_factory=list)
    pending_files: list[tuple[str, Version, bytes]] = field(default_factory=list)  # to log
    committed_files: dict[str, bytes] = field(default_factory=dict)  # to log, then to files
    promotions: list[tuple[str, Version]] = field(default_factory=list)  # pending -> files
    leftovers: list[tuple[str, Version]] = field(default_factory=list)  # pending copies to go
    committed: dict[str, Copy] = field(default_factory=dict)  # changed committed copies
    pending: dict[str, dict[Version, int]] = field(default_factory=dict)  # of every id touched


def plan_writes(
    batch: list[Write],
    committed_of: Callable[[str], Copy | None],
    pending_of: Callable[[str], Mapping[Version, int]],
) -> WritePlan:
    """``committed_of(id)``: the committed copy known now; ``pending_of(id)``: the pending
    copies held now, version -> checksum."""
    planner = _Planner(committed_of, pending_of)
    for write in batch:
        planner.plan.outcomes.append(planner.add(write))
    return planner.finish()


class _Planner:
    def __init__(
        self,
        committed_of: Callable[[str], Copy | None],
        pending_of: Callable[[str], Mapping[Version, int]],
    ) -> None:
        self._committed_of = committed_of
        self._pending_of = pending_of
        self.plan = WritePlan()
        self._committed: dict[str, Copy | None] = {}
        self._pending_before: dict[str, frozenset[Version]] = {}
        self._new_files: dict[tuple[str, Version], bytes] = {}
        # The last action on each id's committed copy: new bytes, or the pending version
        # promoted over it.
        self._last_action: dict[str, bytes | Version] = {}

    def add(self, write: Write) -> StoreOutcome:
        key, version = write.record.message_id, write.record.version
        committed = self._committed_copy(key)
        current = committed[0] if committed else UNKNOWN
        pending = self._pending(key)
        if write.kind is WriteKind.COMMITTED:
            if version < current:
                return StoreOutcome(False, current)
            self.plan.records.append(write.record)
            self._commit(key, version, write.record.checksum, write.message)
        elif write.kind is WriteKind.PENDING:
            if version <= current:
                return StoreOutcome(False, current)
            assert write.message is not None, "a pending copy has bytes"
            pending[version] = write.record.checksum
            self._new_files[key, version] = write.message
            self.plan.records.append(write.record)
        else:
            expected = pending.get(version)
            if expected is None:
                return StoreOutcome(False, current)
            self.plan.records.append(CopyRecord(key, version, expected))
            self._commit(key, version, expected, version)
        return StoreOutcome(True, version)

    def finish(self) -> WritePlan:
        plan = self.plan
        for key, action in self._last_action.items():
            if isinstance(action, bytes):
                plan.committed_files[key] = action
            else:
                plan.promotions.append((key, action))
        promoted = set(plan.promotions)
        plan.pending_files = [
            (key, version, message)
            for (key, version), message in self._new_files.items()
            if version in plan.pending[key] or (key, version) in promoted
        ]
        plan.leftovers = [
            (key, version)
            for key, before in self._pending_before.items()
            for version in before
            if version not in plan.pending[key] and (key, version) not in promoted
        ]
        return plan

    def _commit(
        self, key: str, version: Version, checksum: int, action: bytes | Version | None
    ) -> None:
        self._committed[key] = self.plan.committed[key] = (version, checksum)
        pending = self.plan.pending[key]
        for older in [v for v in pending if v <= version]:
            del pending[older]
        if action is not None:  # a record alone leaves the file as it is
            self._last_action[key] = action

    def _committed_copy(self, key: str) -> Copy | None:
        if key not in self._committed:
            self._committed[key] = self._committed_of(key)
        return self._committed[key]

    def _pending(self, key: str) -> dict[Version, int]:
        if key not in self.plan.pending:
            found = self._pending_of(key)
            self._pending_before[key] = frozenset(found)
            self.plan.pending[key] = dict(found)
        return self.plan.pending[key]
