"""The journal: what a node knows about its copies, kept across crashes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.journal import CopyRecord, Journal, checksum
from kayit.storage.store import JOURNAL_FILE, MessageStore
from kayit.version import Version


def record(key: str, seq: int, holders: tuple[str, ...] = ()) -> CopyRecord:
    return CopyRecord(key, Version(1, seq), checksum(f"{key}{seq}".encode()), holders)


@given(
    st.text(min_size=1, max_size=50),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1), max_size=5
    ),
)
def test_records_round_trip(key: str, term: int, seq: int, crc: int, holders: list[str]) -> None:
    original = CopyRecord(key, Version(term, seq), crc, tuple(holders))
    assert CopyRecord.decode(original.encode()) == original


def test_replay_gives_the_latest_record_of_each_id_and_compacts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.log")
    assert journal.replay() == {}
    journal.append([record("a", 1), record("b", 2, ("m1", "m2")), record("a", 3)])
    journal.append([record("a", 2)])  # older than seq 3: loses
    journal.close()

    again = Journal(tmp_path / "j.log")
    assert again.replay() == {"a": record("a", 3), "b": record("b", 2, ("m1", "m2"))}
    again.close()
    compacted = (tmp_path / "j.log").stat().st_size
    third = Journal(tmp_path / "j.log")
    assert third.replay() == {"a": record("a", 3), "b": record("b", 2, ("m1", "m2"))}
    third.close()
    assert (tmp_path / "j.log").stat().st_size == compacted


def test_a_torn_tail_is_dropped_and_appending_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    journal = Journal(path)
    journal.replay()
    journal.append([record("a", 1), record("b", 1)])
    journal.close()
    with open(path, "r+b") as file:  # a crash cut the last record short
        file.truncate(path.stat().st_size - 3)

    again = Journal(path)
    assert again.replay() == {"a": record("a", 1)}
    again.append([record("c", 1)])
    again.close()
    assert Journal(path).replay() == {"a": record("a", 1), "c": record("c", 1)}


def test_a_corrupted_record_ends_the_replay(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    journal = Journal(path)
    journal.replay()
    journal.append([record("a", 1), record("b", 1)])
    journal.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert Journal(path).replay() == {"a": record("a", 1)}


def _store(root: Path) -> MessageStore:
    return MessageStore(DiskManager(root, IoMode.BUFFERED, FsyncPolicy.NEVER))


def test_a_reopened_store_remembers_versions_and_refuses_older_ones(tmp_path: Path) -> None:
    async def first() -> None:
        store = _store(tmp_path)
        await store.open()
        await store.put("k", b"new", Version(2, 5))
        await store.close()

    async def second() -> tuple[bool, bytes | None, Version | None]:
        store = _store(tmp_path)
        await store.open()
        outcome = await store.put("k", b"stale", Version(1, 9))
        copy = await store.get_verified("k")
        await store.close()
        return outcome.stored, copy[0] if copy else None, copy[1] if copy else None

    asyncio.run(first())
    assert asyncio.run(second()) == (False, b"new", Version(2, 5))
    assert (tmp_path / JOURNAL_FILE).exists()


def test_a_damaged_or_unrecorded_copy_is_not_served(tmp_path: Path) -> None:
    async def scenario() -> tuple[object, object, object]:
        store = _store(tmp_path)
        await store.open()
        await store.put("k", b"message", Version(1, 1))
        (tmp_path / "messages" / "k.msg").write_bytes(b"messagf")  # damaged by hand
        (tmp_path / "messages" / "stray.msg").write_bytes(b"no record")
        damaged = await store.get_verified("k")
        stray = await store.get_verified("stray")
        await store.put("k", b"repaired", Version(1, 2))
        repaired = await store.get_verified("k")
        await store.close()
        return damaged, stray, repaired

    assert asyncio.run(scenario()) == (None, None, (b"repaired", Version(1, 2)))


def test_the_leaders_store_returns_holders_for_its_index(tmp_path: Path) -> None:
    async def scenario() -> dict[str, CopyRecord]:
        store = MessageStore(
            DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.ALWAYS), keep_versions=False
        )
        await store.open()
        await store.put("k", b"v", Version(3, 1), ["m1", "m2"])
        await store.close()
        reopened = MessageStore(
            DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.ALWAYS), keep_versions=False
        )
        records = await reopened.open()
        await reopened.close()
        return records

    assert asyncio.run(scenario()) == {
        "k": CopyRecord("k", Version(3, 1), checksum(b"v"), ("m1", "m2"))
    }
