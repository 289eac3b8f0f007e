"""The leader's cache of recently written messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kayit.storage.cache import ENTRY_OVERHEAD, ValueCache
from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.journal import checksum
from kayit.storage.store import MessageStore
from kayit.version import Version

ENTRY = 10 + ENTRY_OVERHEAD  # what one 10-byte value costs


def test_least_recently_used_values_go_first_within_the_byte_limit() -> None:
    cache = ValueCache(limit_bytes=8 * ENTRY)
    cache.put("a", b"a" * 10)
    cache.put("b", b"b" * 10)
    assert cache.get("a") == b"a" * 10  # now the most recent
    for n in range(7):
        cache.put(f"k{n}", b"k" * 10)  # a ninth entry would pass the limit: "b" goes first
    assert cache.get("b") is None
    assert cache.get("a") == b"a" * 10
    assert cache.size_bytes == 8 * ENTRY


def test_overwrites_and_drops_keep_the_byte_count_right() -> None:
    cache = ValueCache(limit_bytes=100 * ENTRY)
    cache.put("a", b"1234")
    cache.put("a", b"12")
    assert (cache.get("a"), cache.size_bytes) == (b"12", 2 + ENTRY_OVERHEAD)
    cache.drop("a")
    cache.drop("never")
    assert (cache.get("a"), cache.size_bytes) == (None, 0)


def test_a_value_over_an_eighth_of_the_limit_is_not_cached() -> None:
    cache = ValueCache(limit_bytes=8 * ENTRY)
    cache.put("big", b"x" * 11)
    assert cache.get("big") is None
    assert cache.size_bytes == 0


def test_store_serves_what_it_wrote_and_never_an_older_version(tmp_path: Path) -> None:
    async def scenario() -> list[bytes | None]:
        store = MessageStore(
            DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER), cache_bytes=64 * 1024
        )
        await store.open()
        await store.put("k", b"new", Version(1, 2))
        await store.put("k", b"old", Version(1, 1))  # refused: older than what is stored
        (tmp_path / "messages" / "k.msg").write_bytes(b"changed behind its back")
        cached = await store.get("k")
        await store.delete([("k", Version(1, 2))])
        gone = await store.get("k")
        await store.close()
        return [cached, gone]

    assert asyncio.run(scenario()) == [b"new", None]


def test_memory_answers_for_exactly_the_version_asked_never_for_another(tmp_path: Path) -> None:
    """What a GET answered at once reads: the cache holds the bytes last written for the id,
    here a pending copy's, which are not the committed version's."""

    async def scenario() -> tuple[list[bytes | None], bytes | None]:
        store = MessageStore(
            DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER), cache_bytes=64 * 1024
        )
        await store.open()
        await store.put("k", b"committed", Version(1, 1))
        await store.put_pending("k", b"pending", Version(1, 2))
        await store.drained()  # the committed copy is in its file, no longer in the backlog
        found = [
            store.in_memory("k", Version(1, 1), checksum(b"committed")),
            store.in_memory("k", Version(1, 2), checksum(b"pending")),
            store.in_memory("k", Version(1, 3), checksum(b"pending")),
        ]
        on_disk = await store.get_version("k", Version(1, 1))
        await store.close()
        return found, on_disk

    assert asyncio.run(scenario()) == ([None, b"pending", None], b"committed")
