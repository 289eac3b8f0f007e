"""FileStorage: the RaftStorage of a real node, in a directory of its own (``<node dir>/raft``).

Files, each checked by CRC:

- ``format``: the layout's version. A directory of another version stops the node at start.
- ``term``: the current term and the vote cast in it, one record, replaced durably (temp file,
  fsync, rename, directory fsync) whenever either changes, whatever the fsync policy: a
  forgotten vote can elect two leaders in one term.
- ``snapshot``: a header record (index, term, length and CRC of the data, the cluster
  configuration), then the data; replaced durably.
- ``log``: records (``kayit.storage.records``): first the base, the index and term the log
  follows (the snapshot's), then entries and commit indexes in the order they were saved.

Saving a Ready appends its entries and commit index in one write, fsynced before ``save``
returns under fsync=always; under everysec the driver calls ``sync()`` about once a second, and
makes such saves on its event loop (``save_blocks`` says which do not wait for the disk). An
entry at or below the last index replaces the suffix from there (Raft overwrites a conflicting
suffix so): one append, whole or absent after a crash thanks to its CRC. The term file is only
written when the term or vote changes, in elections. The commit index rides in the log rather
than beside the term: it changes with nearly every Ready, and losing its latest value costs
nothing Raft needs (the leader tells it again).

The log is one file, rewritten durably when a snapshot arrives or compaction drops the entries
it covers. The rewrite carries only the entries after the snapshot, which the application has
not applied yet: little beside the snapshot stored with it. Bounded segments would spare that
rewrite at the price of more crash states; not worth it at that size.

A snapshot is stored before the log is rewritten to follow it. A crash in between leaves a log
whose base precedes the snapshot: at load, its entries after the snapshot are kept if it holds
the snapshot's last entry (compaction), else dropped (a snapshot that replaced the whole log).

Damage: a torn tail (a record cut short by a crash: never acknowledged) is dropped and the log
rewritten, so that new appends follow good data. A whole record that fails its checks is a
ConfigError, like a damaged term or snapshot file: the entries it held may have been
acknowledged, and a node that lost them must not vote as if it never had them.
A damaged or missing term or snapshot file is a ConfigError at load: going on without the vote
or the applied state could break Raft's safety, so the node must rejoin the cluster afresh.
All of these are ``RaftStateDamaged``, so that a node can set the directory aside and rejoin
by itself; a directory of another format version is not damage, and stays a plain ConfigError.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from zlib import crc32

from kayit.config import ConfigError
from kayit.consensus.membership import ClusterConfig
from kayit.consensus.messages import Entry, EntryKind, HardState, Snapshot
from kayit.consensus.node import PersistedState
from kayit.storage.atomic import replace_durably, sync_directory
from kayit.storage.disk import FsyncPolicy
from kayit.storage.records import OnDamage, RecordFormat, RecordWriter, record_at, scan

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FORMAT_FILE = "format"
TERM_FILE = "term"
SNAPSHOT_FILE = "snapshot"
LOG_FILE = "log"

_TERM = struct.Struct(">Q?")  # term, whether a vote was cast; then the id voted for
# index, term, length and crc32 of the data that follows; then the encoded ClusterConfig
_SNAPSHOT = struct.Struct(">QQQI")
_BASE = struct.Struct(">BQQ")  # tag, index, term
_ENTRY = struct.Struct(">BQQB")  # tag, index, term, length of the kind; then kind and data
_COMMIT = struct.Struct(">BQ")  # tag, index
_BASE_TAG, _ENTRY_TAG, _COMMIT_TAG = 1, 2, 3

_TERM_RECORD = RecordFormat(_TERM.size, _TERM.size + 0xFFFF)
_SNAPSHOT_HEADER = RecordFormat(_SNAPSHOT.size, _SNAPSHOT.size + 1024 * 1024)
_LOG = RecordFormat(_COMMIT.size, 64 * 1024 * 1024)

_REJOIN = (
    "move the raft directory aside and restart the node with --join HOST:PORT (any other node) "
    "so that it rejoins the cluster as a new node"
)


class RaftStateDamaged(ConfigError):
    """The Raft state in a directory is damaged or incomplete: the node may not go on with it
    (it could vote as if it never held what it acknowledged), only rejoin under a new id.
    ``problem`` says what is wrong; the message adds what an operator can do about it."""

    def __init__(self, problem: str, advice: str) -> None:
        super().__init__(f"{problem}; {advice}")
        self.problem = problem


@dataclass(frozen=True, slots=True)
class _Base:
    """The index and term of the entry the log follows: its snapshot's last."""

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class _Commit:
    index: int


class FileStorage:
    """RaftStorage on disk. ``load()`` first: it opens (or creates) the directory. Not
    thread-safe: the driver calls one method at a time, on its storage thread (or on its loop,
    for a save that ``save_blocks`` says does not wait for the disk)."""

    def __init__(self, directory: Path, fsync: FsyncPolicy) -> None:
        self.directory = directory
        self.fsync = fsync
        self._writer: RecordWriter | None = None
        self._hard_state = HardState()  # term and vote as in the term file; commit as logged
        self._entries: list[Entry] = []  # the entries after the snapshot
        self._snapshot = Snapshot()
        self._log_stale = False  # the snapshot moved on; the log must be rewritten to follow it
        self._unsynced = False  # appended but not yet fsynced (fsync=everysec)

    def load(self) -> PersistedState:
        if self._writer is None:
            self._open()
        return PersistedState(self._hard_state, tuple(self._entries), self._snapshot)

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        """See ``RaftStorage.save``. Raises ValueError for entries that would leave a gap."""
        writer = self._loaded_writer()
        if snapshot is not None and snapshot.index < self._snapshot.index:
            raise ValueError(f"snapshot {snapshot.index} is older than {self._snapshot.index}")
        start = snapshot or self._snapshot
        last = start.index if snapshot is not None else start.index + len(self._entries)
        _check_follow(entries, start.index, last)
        if hard_state is not None:
            self._save_term(hard_state)
        commit = self._hard_state.commit if hard_state is None else hard_state.commit
        if snapshot is not None or self._log_stale:
            if snapshot is not None:
                self._store_snapshot(snapshot)
                self._entries.clear()
            self._take(entries, commit)
            self._rewrite_log()
            return
        bodies = [_encode_entry(entry) for entry in entries]
        if commit != self._hard_state.commit:
            bodies.append(_COMMIT.pack(_COMMIT_TAG, commit))
        if not bodies:
            return
        writer.append(bodies)
        if self.fsync is FsyncPolicy.ALWAYS:
            writer.sync()
        elif self.fsync is FsyncPolicy.EVERYSEC:
            self._unsynced = True
        self._take(entries, commit)

    def save_blocks(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> bool:
        """Whether ``save`` of these waits for the disk: an fsync (fsync=always, a new term or
        vote, a snapshot or a log rewrite). Else it is one write into the page cache."""
        term = self._hard_state
        return (
            self.fsync is FsyncPolicy.ALWAYS
            or snapshot is not None
            or self._log_stale
            or (hard_state is not None and hard_state.voted_for != term.voted_for)
            or (hard_state is not None and hard_state.term != term.term)
        )

    def compact(self, snapshot: Snapshot) -> None:
        self._loaded_writer()
        if snapshot.index < self._snapshot.index:
            raise ValueError(f"snapshot {snapshot.index} is older than {self._snapshot.index}")
        covered = snapshot.index - self._snapshot.index
        self._store_snapshot(snapshot)
        del self._entries[:covered]
        self._rewrite_log()

    def sync(self) -> None:
        """Make the entries appended so far durable (fsync=everysec)."""
        if self._unsynced and self._writer is not None:
            self._writer.sync()
            self._unsynced = False

    def close(self) -> None:
        if self._writer is not None:
            self.sync()
            self._writer.close()
            self._writer = None

    # ---- writing ----------------------------------------------------------------------------

    def _loaded_writer(self) -> RecordWriter:
        assert self._writer is not None, "load() opens the storage"
        return self._writer

    def _take(self, entries: Sequence[Entry], commit: int) -> None:
        if entries:
            del self._entries[entries[0].index - self._snapshot.index - 1 :]
            self._entries.extend(entries)
        self._hard_state = replace(self._hard_state, commit=commit)

    def _save_term(self, hard_state: HardState) -> None:
        current = self._hard_state
        if (hard_state.term, hard_state.voted_for) != (current.term, current.voted_for):
            replace_durably(self.directory / TERM_FILE, _encode_term(hard_state))
            self._hard_state = replace(hard_state, commit=current.commit)

    def _store_snapshot(self, snapshot: Snapshot) -> None:
        replace_durably(self.directory / SNAPSHOT_FILE, _encode_snapshot(snapshot))
        self._snapshot = snapshot
        self._log_stale = True

    def _rewrite_log(self) -> None:
        """Replace the log by one that follows the snapshot and holds only live entries."""
        path = self.directory / LOG_FILE
        bodies = [
            _BASE.pack(_BASE_TAG, self._snapshot.index, self._snapshot.term),
            *(_encode_entry(entry) for entry in self._entries),
            _COMMIT.pack(_COMMIT_TAG, self._hard_state.commit),
        ]
        replace_durably(path, _LOG.frames(bodies))
        previous, self._writer = self._writer, RecordWriter(path, _LOG)
        if previous is not None:
            previous.close()
        self._log_stale = self._unsynced = False

    # ---- loading ----------------------------------------------------------------------------

    def _open(self) -> None:
        if not (self.directory / FORMAT_FILE).exists():
            self._initialise()
        self._check_format()
        for temp in self.directory.glob("*.tmp"):  # a replacement cut short by a crash
            temp.unlink()
        self._hard_state = self._read_term()
        self._snapshot = self._read_snapshot()
        if self._read_log():
            self._writer = RecordWriter(self.directory / LOG_FILE, _LOG)
        else:
            self._rewrite_log()

    def _initialise(self) -> None:
        """Create the directory whole or not at all, so that a file missing later is damage."""
        if self.directory.exists() and any(self.directory.iterdir()):
            raise RaftStateDamaged(
                f"{self.directory} holds files but no {FORMAT_FILE} file: not a raft directory "
                "as kayit writes it",
                _REJOIN,
            )
        fresh = self.directory.with_name(self.directory.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        replace_durably(fresh / FORMAT_FILE, b"%d\n" % FORMAT_VERSION)
        replace_durably(fresh / TERM_FILE, _encode_term(HardState()))
        replace_durably(fresh / SNAPSHOT_FILE, _encode_snapshot(Snapshot()))
        replace_durably(fresh / LOG_FILE, _LOG.frame(_BASE.pack(_BASE_TAG, 0, 0)))
        os.replace(fresh, self.directory)  # an empty directory is replaced too
        sync_directory(self.directory.parent)

    def _check_format(self) -> None:
        found = (self.directory / FORMAT_FILE).read_bytes().strip()
        if found != b"%d" % FORMAT_VERSION:
            raise ConfigError(
                f"{self.directory / FORMAT_FILE} says format {found.decode(errors='replace')!r}"
                f" but this kayit reads format {FORMAT_VERSION}: run the kayit that wrote it"
            )

    def _read(self, name: str) -> bytes:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            raise self._damaged(name, "it is missing") from None

    def _damaged(self, name: str, what: str) -> RaftStateDamaged:
        return RaftStateDamaged(f"{self.directory / name} is damaged ({what})", _REJOIN)

    def _read_term(self) -> HardState:
        data = self._read(TERM_FILE)
        found = record_at(data, 0, _TERM_RECORD, _decode_term)
        if found is None or found[1] != len(data):
            raise self._damaged(TERM_FILE, "its record fails its checks")
        return found[0]

    def _read_snapshot(self) -> Snapshot:
        data = self._read(SNAPSHOT_FILE)
        found = record_at(data, 0, _SNAPSHOT_HEADER, _decode_snapshot_header)
        if found is None:
            raise self._damaged(SNAPSHOT_FILE, "its header fails its checks")
        header, start = found
        body = data[start:]
        if len(body) != header.length or crc32(body) != header.checksum:
            raise self._damaged(SNAPSHOT_FILE, "its data fails its checks")
        return Snapshot(header.index, header.term, body, header.config)

    def _read_log(self) -> bool:
        """Take the entries and commit index that follow the snapshot from the log; False if
        the log must be rewritten (a torn tail, or a snapshot it does not follow). Raises
        ConfigError for damage."""
        data = self._read(LOG_FILE)
        found = scan(data, _LOG, self._decode_log_record, OnDamage.STOP)
        base, entries, commit, used = _replay(found.records)
        if found.damaged or used < len(found.records):
            # Entries past the damage may be ones this node acknowledged: a node that forgot
            # them and kept its vote could elect a leader without them, losing what a
            # majority held. It must come back under a new id, as a node that lost its log.
            raise self._damaged(LOG_FILE, "a record fails its checks or does not follow")
        snapshot = self._snapshot
        base = base or _Base(snapshot.index, snapshot.term)  # a damaged base: nothing follows
        if base.index > snapshot.index:
            raise self._damaged(
                SNAPSHOT_FILE, f"it ends at entry {snapshot.index}, the log after {base.index}"
            )
        follows = base == _Base(snapshot.index, snapshot.term)
        if not follows:
            # Stored the snapshot but crashed before the log was rewritten to follow it.
            position = snapshot.index - base.index
            holds = entries[position - 1].term if 0 < position <= len(entries) else None
            entries = entries[position:] if holds == snapshot.term else []
        self._entries = entries
        last = snapshot.index + len(entries)
        self._hard_state = replace(self._hard_state, commit=min(max(commit, snapshot.index), last))
        return follows and found.end == len(data)

    def _decode_log_record(self, body: bytes) -> Entry | _Base | _Commit:
        tag = body[0]
        if tag == _BASE_TAG:
            return _Base(*_BASE.unpack(body)[1:])
        if tag == _COMMIT_TAG:
            return _Commit(_COMMIT.unpack(body)[1])
        if tag != _ENTRY_TAG:
            raise ValueError(f"no record has tag {tag}")
        _, index, term, kind_length = _ENTRY.unpack_from(body)
        start = _ENTRY.size + kind_length
        if start > len(body):
            raise ValueError("the kind runs past the end of the record")
        name = body[_ENTRY.size : start].decode()
        try:
            kind = EntryKind(name)
        except ValueError:
            raise ConfigError(
                f"{self.directory / LOG_FILE} holds entry {index} of kind {name!r}, which this "
                "kayit does not know: run the kayit that wrote it"
            ) from None
        return Entry(index, term, body[start:], kind)


def _check_follow(entries: Sequence[Entry], snapshot_index: int, last: int) -> None:
    """Entries must be consecutive, start after the snapshot and at most one past ``last``."""
    if not entries:
        return
    first = entries[0].index
    if not snapshot_index < first <= last + 1:
        raise ValueError(f"entries from {first} do not follow {snapshot_index}..{last}")
    for previous, entry in pairwise(entries):
        if entry.index != previous.index + 1:
            raise ValueError(f"entry {entry.index} follows entry {previous.index}")


def _replay(records: list[Entry | _Base | _Commit]) -> tuple[_Base | None, list[Entry], int, int]:
    """The base, entries and commit index the log's records describe, and how many records
    were used: replay stops at the first out of place (damage, as a bad CRC is)."""
    if not records or not isinstance(records[0], _Base):
        return None, [], 0, 0
    base = records[0]
    entries: list[Entry] = []
    commit = 0
    used = 1
    for record in records[1:]:
        if isinstance(record, _Commit):
            commit = record.index
        elif isinstance(record, Entry) and 0 <= record.index - base.index - 1 <= len(entries):
            del entries[record.index - base.index - 1 :]
            entries.append(record)
        else:
            break
        used += 1
    return base, entries, commit, used


def _encode_entry(entry: Entry) -> bytes:
    kind = entry.kind.value.encode()
    return _ENTRY.pack(_ENTRY_TAG, entry.index, entry.term, len(kind)) + kind + entry.data


def _encode_term(hard_state: HardState) -> bytes:
    vote = hard_state.voted_for
    body = _TERM.pack(hard_state.term, vote is not None) + (vote or "").encode()
    return _TERM_RECORD.frame(body)


def _decode_term(body: bytes) -> HardState:
    term, voted = _TERM.unpack_from(body)
    vote = body[_TERM.size :].decode()
    if vote and not voted:
        raise ValueError("an id with no vote")
    return HardState(term, vote if voted else None)


@dataclass(frozen=True, slots=True)
class _SnapshotHeader:
    index: int
    term: int
    length: int
    checksum: int
    config: ClusterConfig


def _encode_snapshot(snapshot: Snapshot) -> bytes:
    data = snapshot.data
    header = _SNAPSHOT.pack(snapshot.index, snapshot.term, len(data), crc32(data))
    return _SNAPSHOT_HEADER.frame(header + snapshot.config.encode()) + data


def _decode_snapshot_header(body: bytes) -> _SnapshotHeader:
    index, term, length, checksum = _SNAPSHOT.unpack_from(body)
    try:
        config = ClusterConfig.decode(body[_SNAPSHOT.size :])
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a cluster configuration: {error}") from None
    return _SnapshotHeader(index, term, length, checksum, config)
