"""Where a Raft node keeps what each Ready tells it to make durable (step 1 of the contract in
``kayit.consensus.node``). The driver calls these methods off the event loop: they block. A
storage may also have ``save_blocks(hard_state, entries, snapshot) -> bool``: False when that
save will not wait for the disk (no fsync), and the driver then saves on the loop.

``MemoryStorage`` keeps it in memory, for simulations and tests of the driver, as etcd's raft
library does with its own MemoryStorage; a real node uses the file storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kayit.consensus.messages import Entry, HardState, Snapshot
from kayit.consensus.node import PersistedState


class RaftStorage(Protocol):
    def load(self) -> PersistedState:
        """Everything saved so far, as a restarted node needs it."""
        ...

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        """One Ready's durable part, in one write: ``snapshot`` (if any) replaces the whole log,
        then entries from ``entries[0].index`` on are replaced by ``entries``; ``hard_state``
        is written when not None. Returns once it survives a crash (as the fsync policy says
        for entries; the hard state always)."""
        ...

    def compact(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` (of what the application applied) durably and drop the entries it
        covers."""
        ...


class MemoryStorage:
    """RaftStorage in memory: what was saved survives a restart of the RaftNode, not of the
    process."""

    def __init__(self) -> None:
        self._state = PersistedState()

    def load(self) -> PersistedState:
        return self._state

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        state = self._state
        kept = state.entries
        if snapshot is not None:
            kept = ()
        if entries:
            kept = tuple(e for e in kept if e.index < entries[0].index) + tuple(entries)
        self._state = PersistedState(
            hard_state=hard_state or state.hard_state,
            entries=kept,
            snapshot=snapshot or state.snapshot,
        )

    def compact(self, snapshot: Snapshot) -> None:
        state = self._state
        self._state = PersistedState(
            hard_state=state.hard_state,
            entries=tuple(e for e in state.entries if e.index > snapshot.index),
            snapshot=snapshot,
        )
