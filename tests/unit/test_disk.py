"""DiskManager (one file per message) and MessageStore (versioned, batched, async)."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest

from kayit.storage.copylog import CopyLog, LoggedCopy
from kayit.storage.data_format import FORMAT_FILE, FORMAT_VERSION
from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.naming import file_name
from kayit.storage.store import JOURNAL_FILE, MessageStore, StoreOutcome
from kayit.version import Version

T = TypeVar("T")

ALL_MODES = list(itertools.product(IoMode, FsyncPolicy))
PAYLOADS = [
    b"hello",
    b"",
    b"  spaces kept  ",
    b"\x00\x01\xff\r\n\n\r",
    "merhaba d\u00fcnya".encode(),
    bytes(range(256)) * 800,  # 200 KiB: more than the 64 KiB buffer
]


def mark_current_format(node_dir: Path) -> None:
    """Files written straight to the disk below are this layout's, not a single-leader one."""
    (node_dir / FORMAT_FILE).write_text(f"{FORMAT_VERSION}\n")


def disk(
    root: Path, io_mode: IoMode = IoMode.BUFFERED, fsync: FsyncPolicy = FsyncPolicy.NEVER
) -> DiskManager:
    return DiskManager(root, io_mode, fsync)


def write_many(manager: DiskManager, items: Iterable[tuple[str, bytes]]) -> None:
    for message_id, message in items:
        manager.write(message_id, message)


# -- DiskManager -------------------------------------------------------------------------------


def test_creates_the_messages_directory(tmp_path: Path) -> None:
    manager = disk(tmp_path / "node")
    assert manager.directory == tmp_path / "node" / "messages"
    assert manager.directory.is_dir()
    assert manager.count() == 0


def test_file_holds_exactly_the_message_bytes(tmp_path: Path) -> None:
    manager = disk(tmp_path)
    for i, payload in enumerate(PAYLOADS):
        write_many(manager, [(str(i), payload)])
        path = tmp_path / "messages" / f"{i}.msg"
        assert path.read_bytes() == payload
        assert manager.path(str(i)) == path


def test_overwrite_replaces_the_whole_file(tmp_path: Path) -> None:
    manager = disk(tmp_path)
    write_many(manager, [("7", b"a long first message")])
    write_many(manager, [("7", b"short")])
    assert manager.path("7").read_bytes() == b"short"
    assert manager.read("7") == b"short"
    assert manager.count() == 1
    assert sorted(p.name for p in manager.directory.iterdir()) == ["7.msg"]


@pytest.mark.parametrize(("io_mode", "fsync"), ALL_MODES)
def test_round_trip_in_every_mode(tmp_path: Path, io_mode: IoMode, fsync: FsyncPolicy) -> None:
    manager = disk(tmp_path, io_mode, fsync)
    items = [(f"id-{i}", payload) for i, payload in enumerate(PAYLOADS)]
    write_many(manager, items)
    for message_id, payload in items:
        assert manager.read(message_id) == payload
        assert manager.path(message_id).read_bytes() == payload
    manager.sync_dirty()
    assert manager.count() == len(items)
    assert [p.name for p in manager.directory.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("io_mode", list(IoMode))
def test_files_written_in_one_mode_read_in_the_other(tmp_path: Path, io_mode: IoMode) -> None:
    other = IoMode.UNBUFFERED if io_mode is IoMode.BUFFERED else IoMode.BUFFERED
    write_many(disk(tmp_path, io_mode), [("x", PAYLOADS[-1])])
    assert disk(tmp_path, other).read("x") == PAYLOADS[-1]


def test_read_missing_is_none(tmp_path: Path) -> None:
    manager = disk(tmp_path)
    assert manager.read("nope") is None
    assert disk(tmp_path, IoMode.UNBUFFERED).read("nope") is None


def test_hostile_ids_stay_inside_messages(tmp_path: Path) -> None:
    manager = disk(tmp_path)
    ids = ["../escape", "/etc/passwd", "..", ".", "a\x00b", "\u011f"]
    write_many(manager, ((i, i.encode()) for i in ids))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messages"]
    for message_id in ids:
        assert manager.read(message_id) == message_id.encode()
    assert manager.count() == len(ids)


def test_stale_temp_file_is_removed_on_start_and_not_counted(tmp_path: Path) -> None:
    messages = tmp_path / "messages"
    messages.mkdir()
    (messages / "1.msg").write_bytes(b"kept")
    (messages / ".1.msg").write_bytes(b"torn write")
    (messages / ".2.msg").write_bytes(b"torn write")
    manager = disk(tmp_path)
    assert sorted(p.name for p in messages.iterdir()) == ["1.msg"]
    assert manager.count() == 1
    assert manager.read("1") == b"kept"
    assert manager.read("2") is None


def test_count_only_counts_msg_files(tmp_path: Path) -> None:
    manager = disk(tmp_path)
    write_many(manager, [("a", b"1"), ("b", b"2")])
    (manager.directory / "notes.txt").write_text("not a message")
    (manager.directory / "a.msg.bak").write_text("not a message")
    (manager.directory / ".c.msg").write_text("temp, made after start")
    assert manager.count() == 2


def test_existing_files_are_counted_on_a_new_manager(tmp_path: Path) -> None:
    write_many(disk(tmp_path), [(str(i), b"x") for i in range(12)])
    assert disk(tmp_path).count() == 12


def test_sync_dirty_survives_a_vanished_file(tmp_path: Path) -> None:
    manager = disk(tmp_path, fsync=FsyncPolicy.EVERYSEC)
    write_many(manager, [("a", b"1"), ("b", b"2")])
    manager.path("a").unlink()
    manager.sync_dirty()
    manager.sync_dirty()  # nothing left to sync
    assert manager.read("b") == b"2"
    assert manager.read("a") is None


def test_empty_id_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    manager = disk(tmp_path)
    with pytest.raises(ValueError):
        write_many(manager, [("", b"x")])
    assert list(manager.directory.iterdir()) == []


# -- MessageStore ------------------------------------------------------------------------------


@pytest.fixture
def log_batches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ids of every batch appended to a copy log."""
    batches: list[list[str]] = []
    real_append = CopyLog.append

    def append(self: CopyLog, copies: list[LoggedCopy]) -> int:
        batches.append([copy.message_id for copy in copies])
        return real_append(self, copies)

    monkeypatch.setattr(CopyLog, "append", append)
    return batches


def run(main: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    return asyncio.run(guarded())


def test_put_then_get(tmp_path: Path) -> None:
    async def main() -> tuple[StoreOutcome, bytes | None, bytes | None, int]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        outcome = await store.put("1", b"hello", Version(1, 1))
        value, missing = await store.get("1"), await store.get("2")
        count = store.count
        await store.close()
        return outcome, value, missing, count

    assert run(main) == (StoreOutcome(True, Version(1, 1)), b"hello", None, 1)
    assert (tmp_path / "messages" / file_name("1")).read_bytes() == b"hello"


def test_older_version_does_not_overwrite_a_newer_one(tmp_path: Path) -> None:
    async def main() -> list[StoreOutcome]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        outcomes = [
            await store.put("k", b"newer", Version(1, 5)),
            await store.put("k", b"older", Version(1, 4)),
            await store.put("k", b"old term", Version(0, 99)),
        ]
        assert store.version("k") == Version(1, 5)
        assert await store.get("k") == b"newer"
        await store.close()
        return outcomes

    assert run(main) == [
        StoreOutcome(True, Version(1, 5)),
        StoreOutcome(False, Version(1, 5)),
        StoreOutcome(False, Version(1, 5)),
    ]
    assert (tmp_path / "messages" / "k.msg").read_bytes() == b"newer"


def test_older_version_in_the_same_batch_loses(tmp_path: Path) -> None:
    async def main() -> list[StoreOutcome]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        outcomes = await asyncio.gather(
            store.put("k", b"newer", Version(2, 1)),
            store.put("k", b"older", Version(1, 9)),
        )
        await store.close()
        return list(outcomes)

    assert run(main) == [StoreOutcome(True, Version(2, 1)), StoreOutcome(False, Version(2, 1))]
    assert (tmp_path / "messages" / "k.msg").read_bytes() == b"newer"


def test_newer_version_later_in_the_same_batch_wins(tmp_path: Path) -> None:
    async def main() -> tuple[list[StoreOutcome], Version | None]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        outcomes = await asyncio.gather(
            store.put("k", b"first", Version(1, 1)),
            store.put("k", b"second", Version(1, 2)),
        )
        version = store.version("k")
        await store.close()
        return list(outcomes), version

    outcomes, version = run(main)
    assert outcomes == [StoreOutcome(True, Version(1, 1)), StoreOutcome(True, Version(1, 2))]
    assert version == Version(1, 2)
    assert (tmp_path / "messages" / "k.msg").read_bytes() == b"second"


def test_equal_version_is_accepted(tmp_path: Path) -> None:
    async def main() -> list[StoreOutcome]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        outcomes = [
            await store.put("k", b"one", Version(3, 3)),
            await store.put("k", b"two", Version(3, 3)),
        ]
        await store.close()
        return outcomes

    assert run(main) == [StoreOutcome(True, Version(3, 3))] * 2
    assert (tmp_path / "messages" / "k.msg").read_bytes() == b"two"


def test_concurrent_puts_coalesce_and_all_complete(
    tmp_path: Path, log_batches: list[list[str]]
) -> None:
    async def main() -> list[StoreOutcome]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        outcomes = await asyncio.gather(
            *(store.put(f"m{i}", f"v{i}".encode(), Version(1, i + 1)) for i in range(200))
        )
        assert store.count == 200
        await store.close()
        return list(outcomes)

    outcomes = run(main)
    assert outcomes == [StoreOutcome(True, Version(1, i + 1)) for i in range(200)]
    assert log_batches == [[f"m{i}" for i in range(200)]]  # one batch
    for i in range(200):
        assert (tmp_path / "messages" / f"m{i}.msg").read_bytes() == f"v{i}".encode()


def test_puts_beyond_max_items_still_all_complete(
    tmp_path: Path, log_batches: list[list[str]]
) -> None:
    async def main() -> list[StoreOutcome]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        outcomes = await asyncio.gather(
            *(store.put(str(i), b"x", Version(1, 1)) for i in range(1030))
        )
        await store.close()
        return list(outcomes)

    assert all(outcome.stored for outcome in run(main))
    assert [len(batch) for batch in log_batches] == [1024, 6]
    assert disk(tmp_path).count() == 1030


def test_count_tracks_new_ids(tmp_path: Path) -> None:
    mark_current_format(tmp_path)
    write_many(disk(tmp_path), [("old1", b"x"), ("old2", b"y")])

    async def main() -> list[int]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        counts = [store.count]
        await store.put("new", b"1", Version(1, 1))
        counts.append(store.count)
        await store.put("new", b"2", Version(1, 2))  # overwrite
        counts.append(store.count)
        await store.put("new", b"3", Version(1, 1))  # rejected
        counts.append(store.count)
        await store.put("old1", b"4", Version(1, 3))  # on disk from before, version unknown
        counts.append(store.count)
        await asyncio.gather(
            store.put("twice", b"a", Version(1, 4)), store.put("twice", b"b", Version(1, 5))
        )
        counts.append(store.count)
        await store.close()
        return counts

    assert run(main) == [0, 1, 1, 1, 2, 3]  # files without a record are not counted


def test_copy_found_on_disk_has_no_version_and_any_version_replaces_it(tmp_path: Path) -> None:
    mark_current_format(tmp_path)
    write_many(disk(tmp_path), [("k", b"from before")])

    async def main() -> tuple[Version | None, bytes | None, StoreOutcome, bytes | None]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        before = store.version("k"), await store.get("k")
        outcome = await store.put("k", b"now", Version(0, 1))
        after = await store.get("k")
        await store.close()
        return before[0], before[1], outcome, after

    assert run(main) == (None, b"from before", StoreOutcome(True, Version(0, 1)), b"now")


@pytest.mark.parametrize("fsync", list(FsyncPolicy))
def test_close_leaves_files_in_place(tmp_path: Path, fsync: FsyncPolicy) -> None:
    async def main() -> None:
        store = MessageStore(disk(tmp_path, fsync=fsync))
        await store.open()
        await asyncio.gather(*(store.put(str(i), b"v%d" % i, Version(1, i)) for i in range(5)))
        await store.close()

    run(main)
    reopened = disk(tmp_path, fsync=fsync)
    assert reopened.count() == 5
    assert [reopened.read(str(i)) for i in range(5)] == [b"v%d" % i for i in range(5)]

    async def count_after_reopen() -> int:
        store = MessageStore(disk(tmp_path, fsync=fsync))
        await store.open()
        count = store.count
        await store.close()
        return count

    assert run(count_after_reopen) == 5


def test_write_error_reaches_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def append(self: CopyLog, copies: list[LoggedCopy]) -> int:
        raise OSError("no space left on device")

    async def main() -> tuple[BaseException | StoreOutcome, Version | None, int]:
        store = MessageStore(disk(tmp_path))
        monkeypatch.setattr(CopyLog, "append", append)
        await store.open()
        [result] = await asyncio.gather(store.put("k", b"x", Version(1, 1)), return_exceptions=True)
        version, count = store.version("k"), store.count
        await store.close()
        return result, version, count

    result, version, count = run(main)
    assert isinstance(result, OSError)
    assert version is None
    assert count == 0


def test_a_copy_whose_file_was_never_written_gets_it_at_the_next_start(tmp_path: Path) -> None:
    """The log is the commit point: a copy stored while its file could not be written (the
    node stopped first, as a SIGKILL would stop it) is in its file after a restart."""

    class FilelessDisk(DiskManager):
        def write(self, message_id: str, message: bytes) -> None:
            raise OSError("killed before the file was written")

    async def main() -> tuple[Version, tuple[bytes, Version] | None]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        await store.put("k", b"old", Version(1, 1))
        await store.close()
        fileless = MessageStore(FilelessDisk(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER))
        await fileless.open()
        await fileless.put("k", b"new", Version(1, 2))
        assert await fileless.get_verified("k") == (b"new", Version(1, 2))  # from memory
        await fileless.close()
        assert (tmp_path / "messages" / file_name("k")).read_bytes() == b"old"
        restarted = MessageStore(disk(tmp_path))
        records = await restarted.open()
        served = await restarted.get_verified("k")
        await restarted.close()
        return records["k"].version, served

    assert run(main) == (Version(1, 2), (b"new", Version(1, 2)))
    assert (tmp_path / "messages" / file_name("k")).read_bytes() == b"new"


def test_store_put_right_after_a_put(tmp_path: Path) -> None:
    async def main() -> list[StoreOutcome]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        first = await store.put("k", b"1", Version(1, 1))
        second = await store.put("k", b"2", Version(1, 2))
        await store.close()
        return [first, second]

    assert run(main, timeout=1.0) == [
        StoreOutcome(True, Version(1, 1)),
        StoreOutcome(True, Version(1, 2)),
    ]


def test_a_journal_append_cut_short_by_a_full_disk_strands_no_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured before: the records acknowledged after the full disk sat behind a torn one,
    and a restart found none of them."""
    real_write = os.write
    full = {"disk": False}

    def write(fd: int, data: memoryview) -> int:
        if full["disk"] and fd not in (1, 2):
            full["disk"] = False
            real_write(fd, data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "no space left on device")
        return real_write(fd, data)

    async def main() -> tuple[BaseException | StoreOutcome, list[StoreOutcome]]:
        store = MessageStore(disk(tmp_path))
        await store.open()
        full["disk"] = True
        [failed] = await asyncio.gather(store.put("x", b"x", Version(1, 1)), return_exceptions=True)
        later = [await store.put(f"k{n}", b"v", Version(1, 2 + n)) for n in range(5)]
        await store.close()
        return failed, later

    monkeypatch.setattr(os, "write", write)
    failed, later = run(main)
    monkeypatch.undo()
    assert isinstance(failed, OSError)
    assert all(outcome.stored for outcome in later)

    async def reopened() -> list[str]:
        store = MessageStore(disk(tmp_path))
        records = await store.open()
        await store.close()
        return sorted(records)

    assert run(reopened) == [f"k{n}" for n in range(5)]


def test_a_damaged_journal_costs_the_store_only_the_damaged_record(tmp_path: Path) -> None:
    async def write() -> None:
        store = MessageStore(disk(tmp_path))
        await store.open()
        for n in range(3):
            await store.put(f"k{n}", b"value", Version(1, n + 1))
        await store.close()

    async def reopen() -> tuple[list[str], bytes | None]:
        store = MessageStore(disk(tmp_path))
        records = await store.open()
        copy = await store.get_verified("k2")
        await store.close()
        return sorted(records), copy[0] if copy else None

    run(write)
    journal = tmp_path / JOURNAL_FILE
    data = bytearray(journal.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the record of k1
    journal.write_bytes(bytes(data))
    assert run(reopen) == (["k0", "k2"], b"value")
