"""The copy log in front of the message files: what a crash or damage in it costs, the backlog's
back-pressure, reads of copies only the log holds, and segments deleted once behind."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kayit.storage.copylog import LOG_DIR, CopyLog, LoggedCopy
from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.journal import checksum
from kayit.storage.materializer import BacklogLimit, DrainRate
from kayit.storage.naming import file_name
from kayit.storage.store import MessageStore, StoreOutcome
from kayit.version import Version

T = TypeVar("T")
V1, V2 = Version(1, 1), Version(1, 2)


def run(main: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    return asyncio.run(guarded())


class GatedDisk(DiskManager):
    """Writes no message file until ``gate`` is set, as a materializer far behind."""

    def __init__(self, root: Path, gate: threading.Event) -> None:
        super().__init__(root, IoMode.BUFFERED, FsyncPolicy.EVERYSEC)
        self.gate = gate

    def write(self, message_id: str, message: bytes) -> None:
        self.gate.wait()
        super().write(message_id, message)


class FilelessDisk(DiskManager):
    """Writes no message file: the node is killed before its materializer gets to any."""

    def write(self, message_id: str, message: bytes) -> None:
        raise OSError("killed before the file was written")


def store_on(root: Path, disk: type[DiskManager] = DiskManager) -> MessageStore:
    return MessageStore(disk(root, IoMode.BUFFERED, FsyncPolicy.NEVER))


def messages(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (root / "messages").iterdir()}


def segments(root: Path) -> list[Path]:
    return sorted((root / LOG_DIR).iterdir())


VALUES = {f"k{n}": b"value %d " % n * (n + 1) for n in range(5)}


def write_without_files(root: Path) -> None:
    """Five committed copies, one pending, all only in the log: no file was written."""

    async def main() -> None:
        store = store_on(root, FilelessDisk)
        await store.open()
        for key, value in VALUES.items():
            await store.put(key, value, V1)
        await store.put_pending("p", b"pending", V2)
        await store.close()

    run(main)
    assert messages(root) == {}


def reopened(root: Path) -> tuple[dict[str, bytes], list[tuple[str, Version]], int]:
    """The message files after a restart, the pending copies, the log's damaged records."""

    async def main() -> tuple[list[tuple[str, Version]], int]:
        store = store_on(root)
        await store.open()
        await store.drained()
        pending = await store.pending_inventory(verify=True)
        damaged = store._log.damaged
        await store.close()
        return pending, damaged

    pending, damaged = run(main)
    return messages(root), pending, damaged


def test_a_restart_writes_every_copy_the_log_holds_to_its_file(tmp_path: Path) -> None:
    write_without_files(tmp_path)
    files = {file_name(key): value for key, value in VALUES.items()}
    assert reopened(tmp_path) == (files, [("p", V2)], 0)
    assert reopened(tmp_path) == (files, [("p", V2)], 0)


def test_a_torn_last_record_is_dropped_and_nothing_else(tmp_path: Path) -> None:
    write_without_files(tmp_path)
    *_, last = [s for s in segments(tmp_path) if s.stat().st_size]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) - 3])  # the pending copy's record, cut short
    files = {file_name(key): value for key, value in VALUES.items()}
    assert reopened(tmp_path) == (files, [], 0)


def test_a_damaged_record_in_the_middle_costs_that_record_only(tmp_path: Path) -> None:
    write_without_files(tmp_path)
    (segment,) = [s for s in segments(tmp_path) if s.stat().st_size]
    data = bytearray(segment.read_bytes())
    at = data.index(VALUES["k2"])
    data[at + 3] ^= 0x20
    segment.write_bytes(bytes(data))
    files = {file_name(key): value for key, value in VALUES.items() if key != "k2"}
    assert reopened(tmp_path) == (files, [("p", V2)], 1)


def test_a_copy_only_in_the_log_is_served_and_its_file_written_behind(tmp_path: Path) -> None:
    gate = threading.Event()

    async def main() -> None:
        store = MessageStore(GatedDisk(tmp_path, gate))
        await store.open()
        await store.put_pending("k", b"first", V1)
        assert await store.promote("k", V1)
        await store.put("k", b"second", V2)
        assert store.backlog == 1  # one file for the two writes
        assert await store.get_verified("k") == (b"second", V2)
        assert await store.get_version("k", V2) == b"second"
        assert sorted(await store.inventory(verify=True)) == [("k", V2)]
        assert not (tmp_path / "messages" / "k.msg").exists()
        gate.set()
        await store.drained()
        assert await store.get_verified("k") == (b"second", V2)
        await store.close()

    try:
        run(main)
    finally:
        gate.set()
    assert messages(tmp_path) == {"k.msg": b"second"}


def test_a_full_backlog_holds_new_stores_until_files_are_written(tmp_path: Path) -> None:
    gate = threading.Event()

    async def main() -> list[StoreOutcome]:
        store = MessageStore(GatedDisk(tmp_path, gate), backlog=BacklogLimit(records=2))
        await store.open()
        done = [await store.put("a", b"a", V1), await store.put("b", b"b", V1)]
        waiting = [
            asyncio.create_task(store.put("c", b"c", V1)),
            asyncio.create_task(store.put_pending("d", b"d", V1)),
        ]
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in waiting)  # back-pressure, not an error
        assert store.backlog == 2
        # A promotion is how copies reach the backlog: it never waits.
        assert not await store.promote("x", V1)
        gate.set()
        done += await asyncio.gather(*waiting)
        await store.drained()
        await store.close()
        return done

    try:
        outcomes = run(main)
    finally:
        gate.set()
    assert outcomes == [StoreOutcome(True, V1)] * 4
    assert messages(tmp_path) == {"a.msg": b"a", "b.msg": b"b", "c.msg": b"c"}


class SlowDisk(DiskManager):
    """Writes about 200 message files a second, as a slow disk does."""

    def write(self, message_id: str, message: bytes) -> None:
        time.sleep(0.005)
        super().write(message_id, message)


def test_the_backlog_bound_is_what_this_disk_writes_in_two_seconds(tmp_path: Path) -> None:
    limit = BacklogLimit(records=10_000, min_records=50)

    async def main() -> int:
        store = MessageStore(SlowDisk(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER), backlog=limit)
        await store.open()
        await asyncio.gather(*(store.put(f"k{n}", b"v", V1) for n in range(300)))
        await store.drained()
        bound = store.backlog_bound
        await store.close()
        return bound

    bound = run(main, timeout=30)
    # ~200 files/s for 2 s: far under the 10,000 a fast disk may hold, never under min_records.
    assert 50 <= bound <= 600


def test_the_backlog_bound_follows_the_measured_rate() -> None:
    limit = BacklogLimit(records=10_000, drain_seconds=2.0, min_records=500)
    assert limit.bound(None) == 10_000  # nothing measured yet
    assert limit.bound(2_000.0) == 4_000
    assert limit.bound(40_000.0) == 10_000
    assert limit.bound(10.0) == 500
    assert BacklogLimit(records=2).bound(10.0) == 2  # a smaller ceiling wins over the floor
    rate = DrainRate(window=0.1, smoothing=0.5)
    rate.observe(10, 0.05)
    assert rate.per_second is None  # under one window of writing: not timed yet
    rate.observe(10, 0.05)
    assert rate.per_second == 200.0
    rate.observe(100, 0.1)  # 1,000/s: the estimate moves half way
    assert rate.per_second == 600.0


def test_files_are_the_bare_bytes_under_the_escaped_id(tmp_path: Path) -> None:
    ids = ["42", "../escape", "a b", "\u011f", "x" * 300]

    async def main() -> None:
        store = store_on(tmp_path)
        await store.open()
        await asyncio.gather(*(store.put(key, key.encode() * 3, V1) for key in ids))
        await store.drained()
        await store.close()

    run(main)
    assert messages(tmp_path) == {file_name(key): key.encode() * 3 for key in ids}


def test_segments_go_once_their_copies_are_in_files_and_stay_for_pending_ones(
    tmp_path: Path,
) -> None:
    def write(*pending: str) -> None:
        async def main() -> None:
            store = store_on(tmp_path)
            await store.open()
            for key in pending:
                await store.put_pending(key, b"pending", V1)
            await store.put("k", b"v", V1)
            await store.close()

        run(main)

    write("p")  # segment 1 holds both copies
    write()  # segment 1 stays for "p"; segment 2 holds a copy now in its file
    write()
    assert [s.name for s in segments(tmp_path)] == ["000000000001.log", "000000000003.log"]


def test_the_log_starts_a_new_segment_when_the_head_is_full(tmp_path: Path) -> None:
    log = CopyLog(tmp_path / LOG_DIR, segment_bytes=100)
    assert log.open() == []
    log.collect()
    copies = [LoggedCopy(f"k{n}", V1, checksum(b"x" * 80), b"x" * 80) for n in range(3)]
    first = log.append(copies[:1])
    second = log.append(copies[1:])
    assert (first, second) == (1, 2)
    assert log.segments == 3  # the full ones and the new head
    log.release(first)
    assert log.segments == 2
    log.release(second)
    assert log.segments == 2  # the second still holds a record
    log.release(second)
    assert log.segments == 1
    log.close()
    reopened = CopyLog(tmp_path / LOG_DIR)
    assert reopened.open() == []
    reopened.close()


@pytest.mark.parametrize("fsync", list(FsyncPolicy))
def test_every_policy_gets_the_files_written_and_the_log_trimmed(
    tmp_path: Path, fsync: FsyncPolicy
) -> None:
    async def main() -> None:
        store = MessageStore(DiskManager(tmp_path, IoMode.BUFFERED, fsync))
        await store.open()
        await asyncio.gather(*(store.put(f"k{n}", b"%d" % n, V1) for n in range(50)))
        await store.drained()
        await store.close()

    run(main)
    run(main)
    assert len(messages(tmp_path)) == 50
    assert len(segments(tmp_path)) == 1
