"""The in-memory Raft log of one node: a snapshot of the compacted prefix (Raft §7), then
entries, split into a persisted part and an unpersisted tail.

Index 0 is a sentinel of term 0 (the empty snapshot), so every entry has a predecessor to match
(Raft §5.3).

The log also knows the cluster configuration: that of its latest CONFIG entry, appended or not
committed yet (thesis §4.1), else that of its snapshot. Dropping a conflicting tail brings back
the configuration before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from kayit.consensus.membership import ClusterConfig
from kayit.consensus.messages import Entry, EntryKind, Snapshot


class RaftLog:
    def __init__(self, persisted: Sequence[Entry] = (), snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot or Snapshot()
        self._entries: list[Entry] = []
        # (index, configuration) of each CONFIG entry in the log, in order.
        self._configs: list[tuple[int, ClusterConfig]] = []
        for position, entry in enumerate(persisted, start=self.snapshot.index + 1):
            if entry.index != position:
                raise ValueError(f"persisted log has entry {entry.index} at index {position}")
            self.append(entry)
        # Entries up to here are durable; the rest must go out in the next Ready.
        self.stable_index = self.last_index

    @property
    def entries(self) -> list[Entry]:
        """The live list of entries after the snapshot; callers must not modify it."""
        return self._entries

    @property
    def last_index(self) -> int:
        return self.snapshot.index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot.term

    @property
    def config(self) -> ClusterConfig:
        return self._configs[-1][1] if self._configs else self.snapshot.config

    @property
    def config_index(self) -> int:
        """Where the current configuration comes from: its entry, or the snapshot."""
        return self._configs[-1][0] if self._configs else self.snapshot.index

    def config_at(self, index: int) -> ClusterConfig:
        """The configuration in effect at ``index``, which must not be compacted."""
        if index < self.snapshot.index:
            raise ValueError(f"entry {index} is compacted into the snapshot")
        for config_index, config in reversed(self._configs):
            if config_index <= index:
                return config
        return self.snapshot.config

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index``; None when compacted into the snapshot or past the end."""
        if self.snapshot.index < index <= self.last_index:
            return self._entries[index - self.snapshot.index - 1]
        return None

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when compacted or past the end."""
        if index == self.snapshot.index:
            return self.snapshot.term
        entry = self.entry(index)
        return None if entry is None else entry.term

    def slice(self, first: int, limit: int) -> tuple[Entry, ...]:
        """Up to ``limit`` entries from index ``first``, which must follow the snapshot."""
        start = first - self.snapshot.index - 1
        if start < 0:
            raise ValueError(f"entry {first} is compacted into the snapshot")
        return tuple(self._entries[start : start + limit])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as this
        one: a later last term wins, else the longer log (Raft §5.4.1)."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def append(self, entry: Entry) -> None:
        if entry.index != self.last_index + 1:
            raise ValueError(f"entry {entry.index} does not follow {self.last_index}")
        self._entries.append(entry)
        if entry.kind is EntryKind.CONFIG:
            self._configs.append((entry.index, ClusterConfig.decode(entry.data)))

    def merge(self, entries: Sequence[Entry], commit: int) -> None:
        """Append a leader's entries that follow a matched prefix: an existing entry that
        conflicts (same index, other term) is dropped with everything after it (Raft §5.3);
        entries already present are kept, so a late duplicate never shortens the log."""
        for entry in entries:
            if entry.index <= self.snapshot.index:
                continue  # committed, and in the snapshot
            existing = self.term_at(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                if entry.index <= commit:
                    raise AssertionError(f"a leader contradicts committed entry {entry.index}")
                self._truncate(entry.index)
            self.append(entry)

    def _truncate(self, first: int) -> None:
        """Drop the entries from ``first`` on, and the configurations they held."""
        del self._entries[first - self.snapshot.index - 1 :]
        while self._configs and self._configs[-1][0] >= first:
            self._configs.pop()
        self.stable_index = min(self.stable_index, first - 1)

    def unstable(self) -> tuple[Entry, ...]:
        return tuple(self._entries[self.stable_index - self.snapshot.index :])

    def stable_to(self, index: int, term: int) -> None:
        """Mark entries up to ``index`` durable, unless the tail was replaced meanwhile."""
        if self.term_at(index) == term and index > self.stable_index:
            self.stable_index = index

    def compact(self, snapshot: Snapshot) -> None:
        """Drop the entries a durable snapshot covers (they must be durable and committed)."""
        if not self.snapshot.index < snapshot.index <= self.stable_index:
            raise ValueError(f"cannot compact to {snapshot.index}")
        if self.term_at(snapshot.index) != snapshot.term:
            raise ValueError(f"snapshot term {snapshot.term} differs from the log's")
        if snapshot.config != self.config_at(snapshot.index):
            raise ValueError(f"snapshot config differs from the log's at {snapshot.index}")
        del self._entries[: snapshot.index - self.snapshot.index]
        self._configs = [item for item in self._configs if item[0] > snapshot.index]
        self.snapshot = snapshot

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a leader's snapshot (Raft §7)."""
        self.snapshot = snapshot
        self._entries = []
        self._configs = []
        self.stable_index = snapshot.index
