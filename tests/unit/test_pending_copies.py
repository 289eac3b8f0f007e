"""Pending copies: versions a node stores beside the committed copy until their version commits,
then promotes; kept in the copy log, crash-safe, found again at start, listed apart."""

from __future__ import annotations

import asyncio
import struct
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kayit.storage.copylog import LOG_DIR
from kayit.storage.data_format import FORMAT_FILE, FORMAT_VERSION
from kayit.storage.disk import PENDING_DIR, DiskManager, FsyncPolicy, IoMode
from kayit.storage.journal import CopyRecord, Journal, _frame, checksum
from kayit.storage.naming import file_name, pending_file_name
from kayit.storage.store import JOURNAL_FILE, MessageStore, StoreOutcome
from kayit.version import UNKNOWN, Version

T = TypeVar("T")
V1, V2, V3, V4 = (Version(1, n) for n in range(1, 5))


def run(main: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    return asyncio.run(guarded())


def new_store(
    root: Path, fsync: FsyncPolicy = FsyncPolicy.NEVER, disk: type[DiskManager] = DiskManager
) -> MessageStore:
    return MessageStore(disk(root, IoMode.BUFFERED, fsync), cache_bytes=64 * 1024)


async def opened(root: Path, fsync: FsyncPolicy = FsyncPolicy.NEVER) -> MessageStore:
    store = new_store(root, fsync)
    await store.open()
    return store


def committed_path(root: Path, key: str) -> Path:
    return root / "messages" / file_name(key)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def state(store: MessageStore, key: str) -> tuple[object, ...]:
    """What the store says of one id: committed copy, pending inventory, copies by version."""
    return (
        await store.get_verified(key),
        sorted(await store.pending_inventory(verify=True)),
        {v: await store.get_version(key, v) for v in (V1, V2, V3, V4)},
    )


# -- storing and promoting ---------------------------------------------------------------------


def test_a_pending_copy_never_touches_the_committed_file(tmp_path: Path) -> None:
    async def main() -> tuple[StoreOutcome, tuple[object, ...]]:
        store = await opened(tmp_path)
        await store.put("k", b"one", V1)
        await store.drained()
        before = committed_path(tmp_path, "k").stat()
        outcome = await store.put_pending("k", b"two", V2)
        after = committed_path(tmp_path, "k").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert (await store.get("k"), store.version("k"), store.count) == (b"one", V1, 1)
        seen = await state(store, "k")
        await store.close()
        return outcome, seen

    outcome, seen = run(main)
    assert outcome == StoreOutcome(True, V2)
    assert seen == ((b"one", V1), [("k", V2)], {V1: b"one", V2: b"two", V3: None, V4: None})
    assert committed_path(tmp_path, "k").read_bytes() == b"one"
    assert names(tmp_path / "messages") == ["k.msg"]
    assert not (tmp_path / PENDING_DIR).exists()  # no file per pending copy


def test_promotion_commits_the_pending_copy_and_drops_only_older_pending_copies(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[list[bool], tuple[object, ...], bytes | None]:
        store = await opened(tmp_path)
        await store.put("k", b"one", V1)
        for version in (V2, V3, V4):
            await store.put_pending("k", b"v%d" % version.seq, version)
        promoted = [await store.promote("k", V3)]
        promoted += [await store.promote("k", V3), await store.promote("k", V2)]
        seen = await state(store, "k")
        value = await store.get("k")
        await store.close()
        return promoted, seen, value

    promoted, seen, value = run(main)
    assert promoted == [True, False, False]  # once only; and V2 went with the promotion
    assert seen == ((b"v3", V3), [("k", V4)], {V1: None, V2: None, V3: b"v3", V4: b"v4"})
    assert value == b"v3"
    assert committed_path(tmp_path, "k").read_bytes() == b"v3"  # written by close at the latest


def test_promoting_a_version_never_stored_is_false_and_changes_nothing(tmp_path: Path) -> None:
    async def main() -> tuple[bool, bool, tuple[object, ...]]:
        store = await opened(tmp_path)
        await store.put("k", b"one", V1)
        await store.put_pending("k", b"three", V3)
        missing = await store.promote("k", V2)
        unknown_id = await store.promote("other", V2)
        seen = await state(store, "k")
        await store.close()
        return missing, unknown_id, seen

    assert run(main) == (
        False,
        False,
        ((b"one", V1), [("k", V3)], {V1: b"one", V2: None, V3: b"three", V4: None}),
    )


def test_a_first_copy_can_be_pending_and_promotion_counts_it(tmp_path: Path) -> None:
    async def main() -> list[object]:
        store = await opened(tmp_path)
        seen: list[object] = [await store.put_pending("new", b"x", V1), store.count]
        seen += [await store.get("new"), await store.promote("new", V1), store.count]
        seen += [await store.get("new")]
        await store.close()
        return seen

    assert run(main) == [StoreOutcome(True, V1), 0, None, True, 1, b"x"]


def test_a_pending_copy_must_be_newer_than_the_committed_one(tmp_path: Path) -> None:
    async def main() -> list[StoreOutcome]:
        store = await opened(tmp_path)
        await store.put("k", b"committed", V3)
        outcomes = [
            await store.put_pending("k", b"older", V2),
            await store.put_pending("k", b"same", V3),
            await store.put_pending("k", b"newer", V4),
            await store.put_pending("k", b"newer again", V4),  # a retry replaces it
        ]
        assert await store.get_version("k", V4) == b"newer again"
        await store.close()
        return outcomes

    assert run(main) == [
        StoreOutcome(False, V3),
        StoreOutcome(False, V3),
        StoreOutcome(True, V4),
        StoreOutcome(True, V4),
    ]


def test_a_committed_put_makes_pending_copies_up_to_its_version_garbage(tmp_path: Path) -> None:
    async def main() -> tuple[object, ...]:
        store = await opened(tmp_path)
        for version in (V2, V4):
            await store.put_pending("k", b"pending", version)
        await store.put("k", b"repaired", V3)
        seen = await state(store, "k")
        await store.close()
        return seen

    assert run(main) == (
        (b"repaired", V3),
        [("k", V4)],
        {V1: None, V2: None, V3: b"repaired", V4: b"pending"},
    )


def test_promotion_replaces_a_cached_value(tmp_path: Path) -> None:
    async def main() -> list[bytes | None]:
        store = await opened(tmp_path)
        await store.put("k", b"old", V1)  # cached
        await store.put_pending("k", b"new", V2)
        before = await store.get("k")
        await store.promote("k", V2)
        after = [await store.get("k"), await store.get_version("k", V2)]
        await store.close()
        return [before, *after]

    assert run(main) == [b"old", b"new", b"new"]


def test_promotions_and_pending_puts_share_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    real_append = Journal.append

    def append(self: Journal, records: Iterable[CopyRecord]) -> None:
        records = list(records)
        batches.append(len(records))
        real_append(self, records)

    monkeypatch.setattr(Journal, "append", append)

    async def main() -> list[bool]:
        store = await opened(tmp_path)
        await asyncio.gather(*(store.put_pending(f"m{n}", b"x", V1) for n in range(100)))
        promoted = await asyncio.gather(*(store.promote(f"m{n}", V1) for n in range(100)))
        await store.close()
        return list(promoted)

    assert all(run(main))
    assert batches == [100, 100]


def test_hostile_and_long_ids_are_kept_as_pending_copies(tmp_path: Path) -> None:
    ids = ["../escape", "/etc/passwd", "..", "a.1.2", "a\x00b", "\u011f", "x" * 230]
    big = Version(2**64 - 1, 2**64 - 1)

    async def main() -> list[bytes | None]:
        store = await opened(tmp_path)
        await asyncio.gather(*(store.put_pending(i, i.encode(), big) for i in ids))
        await store.close()
        reopened = await opened(tmp_path)
        found = [await reopened.get_version(i, big) for i in ids]
        await reopened.close()
        return found

    assert run(main) == [i.encode() for i in ids]
    assert names(tmp_path) == [LOG_DIR, "format", JOURNAL_FILE, "messages"]


# -- dropping and listing ----------------------------------------------------------------------


def test_drop_pending_removes_only_the_copies_held(tmp_path: Path) -> None:
    async def main() -> tuple[int, int, list[tuple[str, Version]]]:
        store = await opened(tmp_path)
        await store.put("k", b"committed", V1)
        for version in (V2, V3):
            await store.put_pending("k", b"p", version)
        await store.put_pending("j", b"p", V2)
        dropped = await store.drop_pending([("k", V2), ("j", V2), ("k", V4), ("none", V2)])
        again = await store.drop_pending([("k", V2)])
        await store.close()
        reopened = await opened(tmp_path)
        left = await reopened.pending_inventory(verify=False)
        assert await reopened.get_verified("k") == (b"committed", V1)
        await reopened.close()
        return dropped, again, left

    assert run(main) == (2, 0, [("k", V3)])


def test_inventories_list_committed_and_pending_copies_apart(tmp_path: Path) -> None:
    async def main() -> list[list[tuple[str, Version]]]:
        store = await opened(tmp_path)
        await store.put("a", b"a", V1)
        await store.put_pending("a", b"a2", V2)
        await store.put_pending("b", b"b3", V3)
        await store.put_pending("c", b"c3", V3)
        lists = [sorted(await store.inventory(verify=True))]
        lists.append(sorted(await store.pending_inventory(verify=True)))
        await store.close()
        return lists

    assert run(main) == [[("a", V1)], [("a", V2), ("b", V3), ("c", V3)]]


def test_a_damaged_copy_of_a_version_is_not_served(tmp_path: Path) -> None:
    async def main() -> list[object]:
        store = MessageStore(DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER))
        await store.open()
        await store.put("k", b"committed", V1)
        await store.drained()
        committed_path(tmp_path, "k").write_bytes(b"committeD")
        found: list[object] = [await store.get_version("k", V1), await store.get_verified("k")]
        await store.close()
        return found

    assert run(main) == [None, None]


# -- restarts and crashes ----------------------------------------------------------------------


def test_a_restart_finds_pending_and_committed_copies_again(tmp_path: Path) -> None:
    async def main() -> tuple[tuple[object, ...], tuple[object, ...], bool]:
        store = await opened(tmp_path)
        await store.put("k", b"one", V1)
        await store.put_pending("k", b"two", V2)
        await store.put_pending("k", b"three", V3)
        before = await state(store, "k")
        await store.close()
        reopened = await opened(tmp_path)
        after = await state(reopened, "k")
        promoted = await reopened.promote("k", V3)
        await reopened.close()
        return before, after, promoted

    before, after, promoted = run(main)
    assert before == after
    assert after[1] == [("k", V2), ("k", V3)]
    assert promoted


def reopened_state(root: Path) -> tuple[tuple[object, ...], int, bytes | None]:
    async def main() -> tuple[tuple[object, ...], int, bytes | None]:
        store = await opened(root)
        seen = await state(store, "k")
        count, value = store.count, await store.get("k")
        await store.close()
        return seen, count, value

    return run(main)


NEW = ((b"two", V2), [("k", V3)], {V1: None, V2: b"two", V3: b"three", V4: None})


class FilelessDisk(DiskManager):
    """Writes no message file, as a node killed before its materializer got to them."""

    def write(self, message_id: str, message: bytes) -> None:
        raise OSError("killed before the file was written")


def test_a_promotion_whose_file_was_never_written_is_finished_at_start(tmp_path: Path) -> None:
    async def main() -> None:
        store = await opened(tmp_path)
        await store.put("k", b"one", V1)
        await store.close()
        killed = new_store(tmp_path, disk=FilelessDisk)
        await killed.open()
        await killed.put_pending("k", b"two", V2)
        await killed.put_pending("k", b"three", V3)
        assert await killed.promote("k", V2)
        assert await state(killed, "k") == NEW  # served from memory meanwhile
        await killed.close()

    run(main)
    assert committed_path(tmp_path, "k").read_bytes() == b"one"
    assert reopened_state(tmp_path) == (NEW, 1, b"two")
    assert committed_path(tmp_path, "k").read_bytes() == b"two"
    assert reopened_state(tmp_path) == (NEW, 1, b"two")  # the same again


def test_a_pending_record_whose_bytes_were_never_logged_is_dropped(tmp_path: Path) -> None:
    """Under a relaxed fsync policy a power loss may keep the record and lose the bytes."""

    async def main() -> None:
        store = await opened(tmp_path)
        await store.put("k", b"one", V1)
        await store.close()

    run(main)
    journal = Journal(tmp_path / JOURNAL_FILE)
    journal.replay()
    journal.append([CopyRecord("k", V2, checksum(b"two"), pending=True)])
    journal.close()
    gone: tuple[object, ...] = ((b"one", V1), [], {V1: b"one", V2: None, V3: None, V4: None})
    assert reopened_state(tmp_path) == (gone, 1, b"one")
    journal = Journal(tmp_path / JOURNAL_FILE)
    assert (journal.replay(), journal.pending) == ({"k": CopyRecord("k", V1, checksum(b"one"))}, [])
    journal.close()


def test_pending_files_of_the_release_before_the_copy_log_are_taken_over(
    tmp_path: Path,
) -> None:
    async def write() -> None:
        store = await opened(tmp_path)
        await store.put("k", b"one", V1)
        await store.put_pending("k", b"three", V3)  # in the log already
        await store.close()

    run(write)
    journal = Journal(tmp_path / JOURNAL_FILE)
    journal.replay()
    journal.append(
        [
            CopyRecord("k", V2, checksum(b"two"), pending=True),
            CopyRecord("j", V2, checksum(b"j"), pending=True),  # its file is damaged
        ]
    )
    journal.close()
    pending = tmp_path / PENDING_DIR
    pending.mkdir()
    (pending / pending_file_name("k", V2)).write_bytes(b"two")
    (pending / pending_file_name("j", V2)).write_bytes(b"J")
    for stray in [".k.1.3.msg", "k.1.3.msg", "notes.txt"]:
        (pending / stray).write_bytes(b"stray")
    versions = {V1: b"one", V2: b"two", V3: b"three", V4: None}
    kept = ((b"one", V1), [("k", V2), ("k", V3)], versions)
    assert reopened_state(tmp_path) == (kept, 1, b"one")
    assert not pending.exists()
    assert reopened_state(tmp_path) == (kept, 1, b"one")  # from the log now


# -- the journal format ------------------------------------------------------------------------

_OLD_COPY = struct.Struct(">?QQIH")  # the record layout before pending copies


def old_encode(record: CopyRecord) -> bytes:
    key = record.message_id.encode()
    head = _OLD_COPY.pack(record.deleted, *record.version, record.checksum, len(key))
    return head + key + "\n".join(record.holders).encode()


def old_decode(body: bytes) -> CopyRecord:
    """How a kayit from before pending copies reads a record."""
    deleted, term, seq, crc, key_length = _OLD_COPY.unpack_from(body)
    start = _OLD_COPY.size
    if start + key_length > len(body):
        raise ValueError("the id runs past the end of the record")
    key = body[start : start + key_length].decode()
    rest = body[start + key_length :].decode()
    return CopyRecord(
        key, Version(term, seq), crc, tuple(rest.split("\n")) if rest else (), deleted
    )


def test_a_journal_written_before_pending_copies_still_replays(tmp_path: Path) -> None:
    old = [
        CopyRecord("a", V1, checksum(b"a"), ("m1", "m2")),
        CopyRecord("b", V1, checksum(b"b")),
        CopyRecord("b", V2, checksum(b"b"), deleted=True),
        CopyRecord("c", V3, checksum(b"c")),
    ]
    (tmp_path / JOURNAL_FILE).write_bytes(b"".join(_frame(old_encode(r)) for r in old))
    # Only the journal's record layout is old here; the directory is of this kayit's format.
    (tmp_path / FORMAT_FILE).write_text(f"{FORMAT_VERSION}\n")
    written = DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER)
    written.write("a", b"a")
    written.write("c", b"c")

    async def main() -> tuple[dict[str, CopyRecord], list[tuple[str, Version]]]:
        store = new_store(tmp_path)
        records = await store.open()
        pending = await store.pending_inventory(verify=True)
        await store.close()
        return records, pending

    assert run(main) == ({"a": old[0], "c": old[3]}, [])
    assert names(tmp_path) == [LOG_DIR, "format", JOURNAL_FILE, "messages"]


def test_a_kayit_from_before_takes_a_pending_record_for_damage_not_for_a_deletion() -> None:
    pending = CopyRecord("k", V2, checksum(b"two"), pending=True)
    with pytest.raises(ValueError):
        old_decode(pending.encode())
    committed = CopyRecord("k", V1, checksum(b"one"), ("m1",))
    assert committed.encode() == old_encode(committed)
    assert old_decode(committed.encode()) == committed


@pytest.mark.parametrize("deleted", [False, True])
def test_pending_records_round_trip_and_unknown_flags_are_damage(deleted: bool) -> None:
    record = CopyRecord("k\u011f", Version(2**64 - 1, 7), 2**32 - 1, deleted=deleted, pending=True)
    assert CopyRecord.decode(record.encode()) == record
    body = bytearray(record.encode())
    body[0] |= 4
    with pytest.raises(ValueError):
        CopyRecord.decode(bytes(body))
    with pytest.raises(ValueError):
        CopyRecord.decode(record.encode() + b"m1")  # a pending record has no holders


# -- durability --------------------------------------------------------------------------------


def log_segments(root: Path) -> set[str]:
    return {str(path) for path in (root / LOG_DIR).iterdir()}


@pytest.mark.parametrize("fsync", [FsyncPolicy.ALWAYS, FsyncPolicy.NEVER])
def test_fsync_always_syncs_the_log_and_the_record_before_put_pending_returns(
    tmp_path: Path, fsyncs: list[str], fsync: FsyncPolicy
) -> None:
    root = tmp_path.resolve()

    async def main() -> list[str]:
        store = await opened(root, fsync)
        fsyncs.clear()
        await store.put_pending("k", b"two", V2)
        seen = list(fsyncs)
        await store.close()
        return seen

    seen = run(main)
    wanted = log_segments(root) | {str(root / JOURNAL_FILE)}  # the bytes, the record
    if fsync is FsyncPolicy.ALWAYS:
        assert wanted <= set(seen)
    else:
        assert wanted.isdisjoint(seen)


def test_fsync_always_syncs_a_promotion_record_before_it_returns(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    root = tmp_path.resolve()

    async def main() -> list[str]:
        store = await opened(root, FsyncPolicy.ALWAYS)
        await store.put_pending("k", b"two", V2)
        fsyncs.clear()
        assert await store.promote("k", V2)
        seen = list(fsyncs)
        await store.close()
        return seen

    assert str(root / JOURNAL_FILE) in run(main)


def test_everysec_syncs_the_log_and_the_journal_within_a_second(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    root = tmp_path.resolve()

    async def main() -> tuple[list[str], list[str]]:
        store = await opened(root, FsyncPolicy.EVERYSEC)
        fsyncs.clear()
        await store.put_pending("k", b"two", V2)
        at_once = list(fsyncs)
        await asyncio.sleep(1.5)
        later = list(fsyncs)
        await store.close()
        return at_once, later

    at_once, later = run(main)
    wanted = log_segments(root) | {str(root / JOURNAL_FILE)}
    assert wanted.isdisjoint(at_once)
    assert wanted <= set(later)


# -- against a model ---------------------------------------------------------------------------


@dataclass
class Model:
    """What the store must hold: one committed copy per id and any number of pending ones."""

    committed: dict[str, tuple[Version, bytes]] = field(default_factory=dict)
    pending: dict[str, dict[Version, bytes]] = field(default_factory=dict)
    deleted: dict[str, Version] = field(default_factory=dict)

    def follows_deletion(self, key: str, version: Version) -> bool:
        """A copy is deleted once the index has a newer version, so no later write of its id
        is older. (The journal keeps an id's newest record, deletions included: a committed
        write older than a deletion would not survive a restart.)"""
        return version > self.deleted.get(key, UNKNOWN)

    def current(self, key: str) -> Version:
        return self.committed[key][0] if key in self.committed else UNKNOWN

    def commit(self, key: str, version: Version, message: bytes) -> None:
        self.committed[key] = (version, message)
        versions = self.pending.get(key, {})
        for older in [v for v in versions if v <= version]:
            del versions[older]

    def put(self, key: str, version: Version, message: bytes) -> StoreOutcome:
        if version < self.current(key):
            return StoreOutcome(False, self.current(key))
        self.commit(key, version, message)
        return StoreOutcome(True, version)

    def put_pending(self, key: str, version: Version, message: bytes) -> StoreOutcome:
        if version <= self.current(key):
            return StoreOutcome(False, self.current(key))
        self.pending.setdefault(key, {})[version] = message
        return StoreOutcome(True, version)

    def promote(self, key: str, version: Version) -> bool:
        message = self.pending.get(key, {}).get(version)
        if message is None:
            return False
        self.commit(key, version, message)
        return True

    def drop_pending(self, key: str, version: Version) -> int:
        return 1 if self.pending.get(key, {}).pop(version, None) is not None else 0

    def delete(self, key: str) -> int:
        if key not in self.committed:
            return 0
        self.deleted[key] = self.committed.pop(key)[0]
        return 1

    def copies(self) -> list[tuple[str, Version]]:
        return sorted((key, copy[0]) for key, copy in self.committed.items())

    def pending_copies(self) -> list[tuple[str, Version]]:
        return sorted((key, v) for key, versions in self.pending.items() for v in versions)

    def version_of(self, key: str, version: Version) -> bytes | None:
        if key in self.committed and self.committed[key][0] == version:
            return self.committed[key][1]
        return self.pending.get(key, {}).get(version)


IDS = ["a", "../b"]
VERSIONS = [Version(term, seq) for term in (1, 2) for seq in (1, 2, 3)]
_copy = st.tuples(st.sampled_from(IDS), st.sampled_from(VERSIONS))
_batched = st.tuples(st.sampled_from(["put", "put_pending", "promote"]), _copy)
_step = st.one_of(
    _batched.map(lambda op: [op]),
    st.lists(_batched, min_size=2, max_size=5),  # one batch: submitted together
    st.tuples(st.sampled_from(["drop_pending", "delete", "restart"]), _copy).map(lambda op: [op]),
)


async def apply(
    store: MessageStore, model: Model, ops: list[tuple[str, tuple[str, Version]]], step: int
) -> tuple[list[object], list[object]]:
    """Runs the ops (at once, if several) on both; returns (store's answers, model's)."""
    calls: list[Awaitable[object]] = []
    expected: list[object] = []
    for n, (op, (key, version)) in enumerate(ops):
        message = b"%s %d.%d" % (key.encode(), step, n)
        if op == "delete":  # as reconcile deletes: a copy held, at its version
            held = model.current(key)
            calls.append(store.delete([(key, held)] if key in model.committed else []))
            expected.append(model.delete(key))
        elif not model.follows_deletion(key, version):
            continue
        elif op == "put":
            calls.append(store.put(key, message, version))
            expected.append(model.put(key, version, message))
        elif op == "put_pending":
            calls.append(store.put_pending(key, message, version))
            expected.append(model.put_pending(key, version, message))
        elif op == "promote":
            calls.append(store.promote(key, version))
            expected.append(model.promote(key, version))
        else:
            calls.append(store.drop_pending([(key, version)]))
            expected.append(model.drop_pending(key, version))
    return list(await asyncio.gather(*calls)), expected


async def check(store: MessageStore, model: Model, root: Path) -> None:
    for key in IDS:
        committed = model.committed.get(key)
        assert await store.get_verified(key) == (committed and (committed[1], committed[0]))
        assert await store.get(key) == (committed and committed[1])
        for version in VERSIONS:
            assert await store.get_version(key, version) == model.version_of(key, version)
    assert sorted(await store.inventory(verify=True)) == model.copies()
    assert sorted(await store.pending_inventory(verify=True)) == model.pending_copies()
    assert store.count == len(model.committed)
    await store.drained()
    assert names(root / "messages") == sorted(file_name(key) for key, _ in model.copies())
    for key, (_, message) in model.committed.items():
        assert (root / "messages" / file_name(key)).read_bytes() == message
    assert not (root / PENDING_DIR).exists()


@settings(max_examples=120, deadline=None)
@given(st.lists(_step, min_size=1, max_size=25), st.sampled_from(list(FsyncPolicy)))
# A put after a promotion of its id in one batch: the journal takes the writes in their order.
@example(
    steps=[
        [
            ("put_pending", ("a", Version(1, 1))),
            ("promote", ("a", Version(1, 1))),
            ("put", ("a", Version(1, 1))),
        ],
        [("restart", ("a", Version(1, 1)))],
    ],
    fsync=FsyncPolicy.ALWAYS,
)
def test_the_store_agrees_with_a_model_after_every_step(
    steps: list[list[tuple[str, tuple[str, Version]]]], fsync: FsyncPolicy
) -> None:
    async def main(root: Path) -> None:
        model = Model()
        store = await opened(root, fsync)
        try:
            for number, ops in enumerate(steps):
                if ops[0][0] == "restart":
                    await store.close()
                    store = await opened(root, fsync)
                else:
                    answers, expected = await apply(store, model, ops, number)
                    assert answers == expected, ops
                await check(store, model, root)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as directory:
        run(lambda: main(Path(directory)), timeout=60)
