"""FileStorage: a Raft node's term, vote, log and snapshot on disk, across restarts and damage."""

from __future__ import annotations

import errno
import os
import random
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kayit.config import ConfigError
from kayit.consensus import file_storage
from kayit.consensus.file_storage import FileStorage
from kayit.consensus.membership import ClusterConfig
from kayit.consensus.messages import Entry, EntryKind, HardState, Snapshot
from kayit.consensus.node import PersistedState
from kayit.consensus.simulation import FaultProfile, Simulation, _Disk, draw_config
from kayit.consensus.storage import MemoryStorage, RaftStorage
from kayit.storage import atomic
from kayit.storage.disk import FsyncPolicy
from kayit.storage.records import RecordFormat

REJOIN = "move the raft directory aside and restart the node with --join"


def opened(root: Path, fsync: FsyncPolicy = FsyncPolicy.ALWAYS) -> FileStorage:
    storage = FileStorage(root / "raft", fsync)
    storage.load()
    return storage


def restarted(root: Path) -> PersistedState:
    """What a node restarted on ``root`` finds."""
    storage = FileStorage(root / "raft", FsyncPolicy.ALWAYS)
    state = storage.load()
    storage.close()
    return state


def run(first: int, last: int, term: int = 1) -> list[Entry]:
    return [
        Entry(index, term, b"command %d/%d" % (index, term)) for index in range(first, last + 1)
    ]


def log_file(root: Path) -> Path:
    return root / "raft" / "log"


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


def test_only_saves_without_an_fsync_may_be_made_on_the_event_loop(tmp_path: Path) -> None:
    lazy = opened(tmp_path / "everysec", FsyncPolicy.EVERYSEC)
    lazy.save(HardState(term=1, voted_for="n0"), run(1, 2), None)
    assert not lazy.save_blocks(None, run(3, 3), None)
    assert not lazy.save_blocks(HardState(term=1, voted_for="n0", commit=2), run(3, 3), None)
    assert lazy.save_blocks(HardState(term=2), (), None)  # a new term is replaced durably
    assert lazy.save_blocks(HardState(term=1, voted_for="n1"), (), None)
    assert lazy.save_blocks(None, (), Snapshot(index=2, term=1))
    careful = opened(tmp_path / "always", FsyncPolicy.ALWAYS)
    assert careful.save_blocks(None, run(1, 1), None)


# ---- round trips ------------------------------------------------------------------------------


def test_a_new_directory_is_empty_and_carries_its_format(tmp_path: Path) -> None:
    storage = opened(tmp_path / "node")
    as_protocol: RaftStorage = storage
    assert as_protocol.load() == PersistedState()
    storage.close()
    assert sorted(os.listdir(tmp_path / "node")) == ["raft"]
    assert sorted(os.listdir(tmp_path / "node" / "raft")) == ["format", "log", "snapshot", "term"]
    assert (tmp_path / "node" / "raft" / "format").read_text() == "1\n"
    assert restarted(tmp_path / "node") == PersistedState()


def test_what_was_saved_is_what_a_restart_finds(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    noop = Entry(1, 1, kind=EntryKind.NO_OP)
    storage.save(HardState(1, "n1", 0), [noop], None)
    storage.save(HardState(1, "n1", 1), run(2, 4), None)
    storage.save(None, [Entry(5, 1, bytes(range(256)))], None)
    storage.save(HardState(2, None, 4), [], None)
    expected = PersistedState(
        HardState(2, None, 4), (noop, *run(2, 4), Entry(5, 1, bytes(range(256)))), Snapshot()
    )
    assert storage.load() == expected
    storage.close()
    assert restarted(tmp_path) == expected


def test_an_overwritten_suffix_stays_overwritten(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(1, "n0", 2), run(1, 6), None)
    storage.save(HardState(2, "n1", 2), run(3, 4, term=2), None)
    storage.close()
    assert restarted(tmp_path).entries == (*run(1, 2), *run(3, 4, term=2))

    storage = opened(tmp_path)
    storage.save(None, run(5, 5, term=2), None)
    storage.close()
    assert restarted(tmp_path).entries == (*run(1, 2), *run(3, 5, term=2))


def test_compaction_drops_the_covered_entries_from_disk(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    for index in range(1, 51):
        storage.save(HardState(1, "n0", index - 1), run(index, index), None)
    before = log_file(tmp_path).stat().st_size
    snapshot = Snapshot(40, 1, b"the application's state")
    storage.compact(snapshot)
    assert storage.load().entries == tuple(run(41, 50))
    storage.save(HardState(1, "n0", 50), run(51, 51), None)
    storage.close()
    assert log_file(tmp_path).stat().st_size < before / 4
    assert restarted(tmp_path) == PersistedState(
        HardState(1, "n0", 50), tuple(run(41, 51)), snapshot
    )


def test_a_snapshot_saved_from_the_leader_replaces_the_whole_log(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(1, "n0", 2), run(1, 10), None)
    voters = ClusterConfig(frozenset({"n0", "n1", "n2"}), frozenset({"n3"}))
    snapshot = Snapshot(20, 2, b"leader's state", voters)
    storage.save(HardState(3, "n1", 20), run(21, 22, term=3), snapshot)
    storage.save(None, run(23, 23, term=3), None)
    storage.close()
    assert restarted(tmp_path) == PersistedState(
        HardState(3, "n1", 20), tuple(run(21, 23, term=3)), snapshot
    )


def test_entries_that_would_leave_a_gap_are_refused(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(1, "n0", 0), run(1, 3), None)
    storage.compact(Snapshot(2, 1))
    for entries in [run(5, 5), run(2, 3), [*run(3, 3), *run(5, 5)]]:
        with pytest.raises(ValueError):
            storage.save(None, entries, None)
    with pytest.raises(ValueError):
        storage.save(None, run(5, 5), Snapshot(3, 1))
    with pytest.raises(ValueError):
        storage.compact(Snapshot(1, 1))
    storage.close()
    assert restarted(tmp_path).entries == tuple(run(3, 3))


# ---- what each save costs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fsync", "fsyncs_per_save", "fsyncs_by_sync"),
    [(FsyncPolicy.ALWAYS, 1, 0), (FsyncPolicy.EVERYSEC, 0, 1), (FsyncPolicy.NEVER, 0, 0)],
)
def test_saving_a_ready_is_one_write_and_as_the_policy_says_one_fsync(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fsync: FsyncPolicy,
    fsyncs_per_save: int,
    fsyncs_by_sync: int,
) -> None:
    storage = opened(tmp_path, fsync)
    storage.save(HardState(1, "n0", 0), run(1, 1), None)
    storage.sync()
    calls = {"write": 0, "fsync": 0}
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: bytes) -> int:
        calls["write"] += 1
        return real_write(fd, data)

    def fsync_call(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync_call)
    for index in range(2, 12):
        storage.save(HardState(1, "n0", index - 1), run(index, index), None)
    assert calls == {"write": 10, "fsync": 10 * fsyncs_per_save}
    storage.sync()
    storage.sync()  # nothing new to sync
    assert calls["fsync"] == 10 * fsyncs_per_save + fsyncs_by_sync

    calls["fsync"] = 0
    storage.save(HardState(2, "n1", 11), [], None)  # a new term is durable under any policy
    assert calls["fsync"] >= 1
    monkeypatch.undo()
    storage.close()
    assert restarted(tmp_path).entries == tuple(run(1, 11))


# ---- crashes and damage -----------------------------------------------------------------------


def test_a_torn_last_record_is_dropped_and_appending_goes_on(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(1, "n0", 0), [], None)
    for index in range(1, 4):
        storage.save(None, run(index, index), None)
    storage.close()
    log = log_file(tmp_path)
    with open(log, "r+b") as file:  # a crash cut the last append short
        file.truncate(log.stat().st_size - 3)

    state = restarted(tmp_path)
    assert state.entries == tuple(run(1, 2))
    assert not log.with_name("log.damaged").exists()  # a torn tail is no damage
    storage = opened(tmp_path)
    storage.save(None, run(3, 3, term=2), None)
    storage.close()
    assert restarted(tmp_path).entries == (*run(1, 2), *run(3, 3, term=2))


def test_a_damaged_record_stops_the_node_and_changes_nothing(tmp_path: Path) -> None:
    # The entries from the damage on may be ones this node acknowledged: it may not go on
    # voting without them, so it is stopped, with its files as they were.
    storage = opened(tmp_path)
    storage.save(HardState(1, "n0", 0), [], None)
    ends = []
    for index in range(1, 11):
        storage.save(None, run(index, index), None)
        ends.append(log_file(tmp_path).stat().st_size)
    storage.close()
    flip(log_file(tmp_path), ends[4] - 2)  # inside entry 5's record
    damaged = log_file(tmp_path).read_bytes()

    with pytest.raises(ConfigError, match=r"log is damaged .*rejoins the cluster"):
        restarted(tmp_path)
    assert log_file(tmp_path).read_bytes() == damaged


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
@pytest.mark.parametrize("name", ["term", "snapshot"])
def test_a_damaged_term_or_snapshot_file_stops_the_node(
    tmp_path: Path, name: str, damage: str
) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(4, "n2", 3), run(1, 5), None)
    storage.compact(Snapshot(3, 1, b"applied state"))
    storage.close()
    path = tmp_path / "raft" / name
    if damage == "flip":
        flip(path, path.stat().st_size - 1)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-1])
    else:
        path.unlink()
    with pytest.raises(ConfigError, match=REJOIN) as refused:
        restarted(tmp_path)
    assert str(path) in str(refused.value)


def test_a_format_this_version_does_not_read_stops_the_node(tmp_path: Path) -> None:
    opened(tmp_path).close()
    (tmp_path / "raft" / "format").write_text("2\n")
    with pytest.raises(ConfigError, match="format '2'"):
        restarted(tmp_path)


def test_a_directory_kayit_did_not_write_is_refused_and_an_empty_one_is_used(
    tmp_path: Path,
) -> None:
    (tmp_path / "raft").mkdir()
    assert restarted(tmp_path) == PersistedState()
    (tmp_path / "other" / "raft").mkdir(parents=True)
    (tmp_path / "other" / "raft" / "log").write_bytes(b"someone else's")
    with pytest.raises(ConfigError, match="no format file"):
        restarted(tmp_path / "other")


def test_an_entry_kind_this_version_does_not_know_stops_the_node(tmp_path: Path) -> None:
    """Kinds are stored by name, so a kind added later is named in the error, not misread."""
    opened(tmp_path).close()
    body = struct.pack(">BQQB", 2, 1, 1, 6) + b"future" + b"data"
    with open(log_file(tmp_path), "ab") as log:
        log.write(RecordFormat(9, 1 << 20).frame(body))
    with pytest.raises(ConfigError, match="entry 1 of kind 'future'"):
        restarted(tmp_path)


def test_a_failed_append_is_cut_back_and_the_next_one_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(1, "n0", 1), run(1, 2), None)
    real_write = os.write

    def full_disk(fd: int, data: memoryview) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "no space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="no space"):
        storage.save(HardState(1, "n0", 2), run(3, 4), None)
    monkeypatch.undo()
    before = PersistedState(HardState(1, "n0", 1), tuple(run(1, 2)), Snapshot())
    assert storage.load() == before
    assert restarted(tmp_path) == before

    storage.save(HardState(1, "n0", 3), run(3, 4), None)
    storage.close()
    assert restarted(tmp_path) == PersistedState(
        HardState(1, "n0", 3), tuple(run(1, 4)), Snapshot()
    )


class _Crash(Exception):
    pass


def crash_before_the_log_is_rewritten(monkeypatch: pytest.MonkeyPatch) -> None:
    real = atomic.replace_durably

    def replace_durably(path: Path, data: bytes) -> None:
        if path.name == "log":
            raise _Crash
        real(path, data)

    monkeypatch.setattr(file_storage, "replace_durably", replace_durably)


def test_a_compaction_cut_short_after_its_snapshot_is_finished_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(1, "n0", 8), run(1, 10), None)
    crash_before_the_log_is_rewritten(monkeypatch)
    snapshot = Snapshot(6, 1, b"applied up to 6")
    with pytest.raises(_Crash):
        storage.compact(snapshot)
    monkeypatch.undo()
    storage.close()
    expected = PersistedState(HardState(1, "n0", 8), tuple(run(7, 10)), snapshot)
    assert restarted(tmp_path) == expected
    assert restarted(tmp_path) == expected  # and the log now follows the snapshot
    storage = opened(tmp_path)
    storage.save(None, run(11, 11), None)
    storage.close()
    assert restarted(tmp_path).entries == tuple(run(7, 11))


def test_a_snapshot_install_cut_short_drops_the_log_it_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(1, "n0", 2), run(1, 10), None)
    crash_before_the_log_is_rewritten(monkeypatch)
    snapshot = Snapshot(8, 2, b"the leader's state")  # entry 8 of our log is of term 1
    with pytest.raises(_Crash):
        storage.save(HardState(2, "n1", 8), run(9, 9, term=2), snapshot)
    # Still open: the next save writes the log that follows the snapshot.
    monkeypatch.undo()
    storage.save(None, run(10, 10, term=2), None)
    assert restarted(tmp_path).entries == tuple(run(9, 10, term=2))
    storage.close()

    storage = opened(tmp_path / "second")
    storage.save(HardState(1, "n0", 2), run(1, 10), None)
    crash_before_the_log_is_rewritten(monkeypatch)
    with pytest.raises(_Crash):
        storage.save(HardState(2, "n1", 8), run(9, 9, term=2), snapshot)
    monkeypatch.undo()
    storage.close()
    # A crash here: the term and snapshot are new, the log is the old one.
    assert restarted(tmp_path / "second") == PersistedState(HardState(2, "n1", 8), (), snapshot)


# ---- against the model ------------------------------------------------------------------------


def draw_append(data: st.DataObject, state: PersistedState) -> tuple[HardState | None, list[Entry]]:
    """A Ready's durable part as a RaftNode makes it: entries from after the commit index on
    (overwriting a suffix or not), of a term at least as new as any, and a commit index that
    stays in the log."""
    current = state.hard_state
    last = state.snapshot.index + len(state.entries)
    # New terms come in elections, rarely (and each is an fsynced file replacement here).
    term = current.term + data.draw(st.sampled_from((0, 0, 0, 1, 2)), label="new terms")
    vote = current.voted_for
    if term != current.term:
        vote = data.draw(st.sampled_from([None, "n0", "n1"]), label="vote")
    first = data.draw(st.integers(max(current.commit, state.snapshot.index) + 1, last + 1))
    entries = [
        Entry(index, term, data.draw(st.binary(max_size=20)), data.draw(st.sampled_from(EntryKind)))
        for index in range(first, first + data.draw(st.integers(0, 3), label="count"))
    ]
    commit = data.draw(st.integers(current.commit, entries[-1].index if entries else last))
    hard_state = HardState(term, vote, commit)
    if hard_state == current and data.draw(st.booleans(), label="no hard state"):
        return None, entries
    return hard_state, entries


CONFIGS = st.sampled_from(
    [
        ClusterConfig(),
        ClusterConfig(frozenset({"n0", "n1", "n2"})),
        ClusterConfig(frozenset({"n0"}), frozenset({"n3", "n\u00fc"})),
    ]
)


class FileStorageAgainstMemory(RuleBasedStateMachine):
    """Random saves, compactions and restarts: a restarted FileStorage must load exactly what
    MemoryStorage holds after the same calls."""

    fsync = FsyncPolicy.ALWAYS

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp())
        self.model = MemoryStorage()
        self.storage = opened(self.root, self.fsync)

    def teardown(self) -> None:
        self.storage.close()
        shutil.rmtree(self.root)

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        self.model.save(hard_state, entries, snapshot)
        self.storage.save(hard_state, entries, snapshot)

    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        self.save(*draw_append(data, self.model.load()), None)

    @rule(data=st.data())
    def install_snapshot(self, data: st.DataObject) -> None:
        state = self.model.load()
        current = state.hard_state
        last = state.snapshot.index + len(state.entries)
        index = data.draw(st.integers(current.commit + 1, last + 5), label="snapshot index")
        term = data.draw(st.integers(0, current.term))
        snapshot = Snapshot(index, term, data.draw(st.binary()), data.draw(CONFIGS))
        entries = run(index + 1, index + data.draw(st.integers(0, 2)), term=current.term)
        self.save(HardState(current.term, current.voted_for, index), entries, snapshot)

    @precondition(
        lambda self: self.model.load().hard_state.commit > self.model.load().snapshot.index
    )
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        state = self.model.load()
        index = data.draw(st.integers(state.snapshot.index + 1, state.hard_state.commit))
        term = state.entries[index - state.snapshot.index - 1].term
        snapshot = Snapshot(index, term, data.draw(st.binary(max_size=50)), data.draw(CONFIGS))
        self.model.compact(snapshot)
        self.storage.compact(snapshot)

    @rule()
    def sync(self) -> None:
        self.storage.sync()

    @rule()
    def restart(self) -> None:
        self.storage.close()
        self.storage = opened(self.root, self.fsync)
        assert self.storage.load() == self.model.load()

    @invariant()
    def holds_what_the_model_holds(self) -> None:
        assert self.storage.load() == self.model.load()


class EverySecondAgainstMemory(FileStorageAgainstMemory):
    """In-process restarts find even unsynced entries: the kernel has them."""

    fsync = FsyncPolicy.EVERYSEC


FileStorageAgainstMemory.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None
)
EverySecondAgainstMemory.TestCase.settings = settings(
    max_examples=20, stateful_step_count=30, deadline=None
)
TestFileStorageAgainstMemory = FileStorageAgainstMemory.TestCase
TestEverySecondAgainstMemory = EverySecondAgainstMemory.TestCase


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_crash_at_any_byte_of_an_append_leaves_a_state_between_two_saves(
    data: st.DataObject,
) -> None:
    """Cut the log anywhere: the node finds the state after one save plus whole records of
    the next (term and vote, written before the append, already new)."""
    model = MemoryStorage()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        storage = opened(root, FsyncPolicy.NEVER)
        term_file = root / "raft" / "term"
        states = [model.load()]
        saves: list[list[Entry]] = [[]]
        ends = [log_file(root).stat().st_size]
        terms = [term_file.read_bytes()]
        for _ in range(data.draw(st.integers(1, 8), label="saves")):
            hard_state, entries = draw_append(data, model.load())
            model.save(hard_state, entries, None)
            storage.save(hard_state, entries, None)
            states.append(model.load())
            saves.append(entries)
            ends.append(log_file(root).stat().st_size)
            terms.append(term_file.read_bytes())
        storage.close()
        cut = data.draw(st.integers(ends[0], ends[-1]), label="cut")
        cut_save = next(n for n, end in enumerate(ends) if end >= cut)
        os.truncate(log_file(root), cut)
        term_file.write_bytes(terms[cut_save])  # written before the append that was cut
        found = restarted(root)

    after = states[cut_save]
    before = states[cut_save - 1] if cut_save else after
    entries = saves[cut_save]
    # No snapshot in this history: entry i is at position i - 1.
    kept = before.entries[: entries[0].index - 1] if entries else before.entries
    between = [
        PersistedState(
            HardState(after.hard_state.term, after.hard_state.voted_for, before.hard_state.commit),
            before.entries if written == 0 else (*kept, *entries[:written]),
            before.snapshot,
        )
        for written in range(len(entries) + 1)
    ]
    assert found in [after, *between]


# ---- with Raft nodes --------------------------------------------------------------------------


class FileDisk(_Disk):
    """A simulated node's disk kept by FileStorage too; every restart loads from the files and
    must find what the simulation's own disk holds."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.storage = FileStorage(directory, FsyncPolicy.NEVER)
        self.storage.load()

    def persist(
        self, hard_state: HardState | None, entries: tuple[Entry, ...], snapshot: Snapshot | None
    ) -> None:
        super().persist(hard_state, entries, snapshot)
        self.storage.save(hard_state, entries, snapshot)

    def compact(self, snapshot: Snapshot) -> None:
        super().compact(snapshot)
        self.storage.compact(snapshot)

    def load(self) -> PersistedState:
        self.storage.close()
        self.storage = FileStorage(self.directory, FsyncPolicy.NEVER)
        loaded = self.storage.load()
        assert loaded == super().load(), "FileStorage loaded other than what was saved"
        return loaded


@pytest.mark.parametrize("seed", range(20))
def test_raft_nodes_restart_from_file_storage_through_fault_schedules(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(f"profile-{seed}")
    simulation = Simulation(seed, 3, FaultProfile.draw(rng), draw_config(rng))
    disks = {node_id: FileDisk(tmp_path / node_id / "raft") for node_id in simulation.ids}
    simulation.disks.update(disks)
    simulation.run()
    assert simulation.checker.committed > 0
    for disk in disks.values():
        disk.storage.close()
