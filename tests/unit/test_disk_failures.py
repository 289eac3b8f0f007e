"""MessageStore on a disk that fails for real: a small tmpfs that fills up part way through a
batch (or a small file's replacement), and a process out of file descriptors when the sync of
every second is due.

A failed batch leaves no temp file or half-written pending copy behind, and the copies held
before are still served, also after a restart; files the materializer cannot write stay in the
backlog, served, until it can."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from kayit.storage.atomic import replace_durably
from kayit.storage.disk import PENDING_DIR, DiskManager, FsyncPolicy, IoMode
from kayit.storage.store import BacklogLimit, MessageStore, StoreOutcome
from kayit.version import Version

T = TypeVar("T")

V1, V2 = Version(1, 1), Version(1, 2)
IDS = [f"id{n}" for n in range(16)]
OLD = {key: key.encode() * 1000 for key in IDS}  # ~4 KB each: fits
BIG = 96 * 1024  # 16 of these (1.5 MB) do not fit in the 1 MB disk


def run(main: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    return asyncio.run(guarded())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (root only), unmounted after it."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        # Lazily if a failed test left a store open: the mount goes once its files close.
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)


def temp_and_stray_files(root: Path) -> list[str]:
    """Files of a failed write: temp files (their names start with '.') in messages/ or
    pending/, and any pending copy at all (none of these tests keeps one)."""
    found = [p.name for p in (root / "messages").iterdir() if p.name.startswith(".")]
    if (root / PENDING_DIR).exists():
        found += [p.name for p in (root / PENDING_DIR).iterdir()]
    return found


async def opened(root: Path, io_mode: IoMode) -> MessageStore:
    store = MessageStore(DiskManager(root, io_mode, FsyncPolicy.NEVER))
    await store.open()
    return store


async def served(store: MessageStore) -> dict[str, tuple[bytes, Version] | None]:
    return {key: await store.get_verified(key) for key in IDS}


def held_before(root: Path, io_mode: IoMode) -> None:
    async def main() -> None:
        store = await opened(root, io_mode)
        for key, value in OLD.items():
            assert await store.put(key, value, V1) == StoreOutcome(True, V1)
        await store.close()

    run(main)


def reopened(root: Path, io_mode: IoMode) -> dict[str, tuple[bytes, Version] | None]:
    async def main() -> dict[str, tuple[bytes, Version] | None]:
        store = await opened(root, io_mode)
        try:
            assert await store.pending_inventory(verify=True) == []
            return await served(store)
        finally:
            await store.close()

    return run(main)


@pytest.mark.parametrize("io_mode", list(IoMode))
def test_a_batch_that_fills_the_disk_leaves_no_temp_file_and_the_old_copies(
    small_disk: Path, io_mode: IoMode
) -> None:
    held_before(small_disk, io_mode)
    old = {key: (value, V1) for key, value in OLD.items()}

    async def main() -> list[StoreOutcome | BaseException]:
        store = await opened(small_disk, io_mode)
        try:
            outcomes = await asyncio.gather(
                *(store.put(key, b"n" * BIG, V2) for key in IDS), return_exceptions=True
            )
            assert temp_and_stray_files(small_disk) == []
            assert await served(store) == old
            # The space the failed batch took is free again: a write that fits goes through.
            assert await store.put(IDS[0], b"small", V2) == StoreOutcome(True, V2)
        finally:
            await store.close()
        return outcomes

    outcomes = run(main)
    assert all(isinstance(outcome, OSError) for outcome in outcomes)
    assert reopened(small_disk, io_mode) == {**old, IDS[0]: (b"small", V2)}
    assert temp_and_stray_files(small_disk) == []


@pytest.mark.parametrize("io_mode", list(IoMode))
def test_pending_copies_that_fill_the_disk_leave_nothing_behind(
    small_disk: Path, io_mode: IoMode
) -> None:
    held_before(small_disk, io_mode)
    old = {key: (value, V1) for key, value in OLD.items()}

    async def main() -> list[StoreOutcome | BaseException]:
        store = await opened(small_disk, io_mode)
        try:
            outcomes = await asyncio.gather(
                *(store.put_pending(key, b"p" * BIG, V2) for key in IDS), return_exceptions=True
            )
            assert temp_and_stray_files(small_disk) == []
            assert await store.pending_inventory(verify=False) == []
            assert await served(store) == old
        finally:
            await store.close()
        return outcomes

    outcomes = run(main)
    assert all(isinstance(outcome, OSError) for outcome in outcomes)
    assert reopened(small_disk, io_mode) == old


def test_a_small_file_replaced_on_a_full_disk_keeps_its_old_bytes_and_no_temp_file(
    small_disk: Path,
) -> None:
    path = small_disk / "record"
    replace_durably(path, b"old")
    with pytest.raises(OSError):
        replace_durably(path, b"n" * 2 * 1024 * 1024)
    assert sorted(p.name for p in small_disk.iterdir()) == ["record"]
    assert path.read_bytes() == b"old"


# -- the sync of every second ---------------------------------------------------------------------


@contextmanager
def no_file_descriptors_left() -> Iterator[None]:
    """Every open() of this process fails with EMFILE (those already open stay usable)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_files_that_cannot_be_written_stay_in_the_backlog_served_until_they_can(
    tmp_path: Path,
) -> None:
    root = tmp_path.resolve()

    async def main() -> None:
        disk = DiskManager(root, IoMode.BUFFERED, FsyncPolicy.EVERYSEC)
        store = MessageStore(disk, backlog=BacklogLimit(records=1))
        await store.open()
        loop = asyncio.get_running_loop()
        with no_file_descriptors_left():
            # The log's file is open already: the copy is stored, its file cannot be made.
            assert await store.put("k", b"value", V1) == StoreOutcome(True, V1)
            await asyncio.sleep(0.3)
            assert store.backlog == 1
            assert await store.get_verified("k") == (b"value", V1)
            # The backlog is full and cannot drain: a store fails rather than waits forever.
            with pytest.raises(OSError, match="message files cannot be written"):
                await store.put("j", b"value", V1)
        assert not (root / "messages" / "k.msg").exists()
        deadline = loop.time() + 5
        while store.backlog and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert (root / "messages" / "k.msg").read_bytes() == b"value"
        await store.close()

    run(main)
