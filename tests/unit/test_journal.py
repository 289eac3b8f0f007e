"""The journal: what a node knows about its copies, kept across crashes."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.journal import CopyRecord, Journal, _frame, checksum
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


def test_a_damaged_last_record_is_counted_but_a_torn_or_zeroed_tail_is_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.log"
    good = _frame(record("a", 1).encode())
    last = bytearray(_frame(record("b", 1).encode()))
    last[-1] ^= 0xFF  # complete, but fails its CRC: damage, not a crash during an append
    for tail, damaged in [(bytes(last), 1), (bytes(last[:-3]), 0), (bytes(4096), 0)]:
        path.write_bytes(good + tail)
        journal = Journal(path)
        assert journal.replay() == {"a": record("a", 1)}
        journal.close()
        assert (journal.damaged, journal.lost_records) == (damaged, damaged > 0)
        journal.damaged_copy.unlink(missing_ok=True)
        assert path.read_bytes() == good


def _journal_bytes(records: list[CopyRecord]) -> bytes:
    return b"".join(_frame(r.encode()) for r in records)


MANY = [
    record(f"id-{n}" * (1 + n % 4), n, tuple(f"10.0.0.{h}:5556" for h in range(n % 3)))
    for n in range(40)
]
SPANS = list(itertools.accumulate((len(_frame(r.encode())) for r in MANY), initial=0))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, SPANS[-1] - 1), st.integers(1, 255)),
        min_size=1,
        max_size=4,
        unique_by=lambda flip: flip[0],
    )
)
def test_damage_costs_only_the_records_it_touches(flips: list[tuple[int, int]]) -> None:
    data = bytearray(_journal_bytes(MANY))
    for position, mask in flips:
        data[position] ^= mask
    touched = {n for n in range(len(MANY)) for p, _ in flips if SPANS[n] <= p < SPANS[n + 1]}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "j.log"
        path.write_bytes(bytes(data))
        journal = Journal(path)
        replayed = journal.replay()
        journal.close()
        again = Journal(path).replay()  # the compacted file keeps them all
    survivors = {r.message_id: r for n, r in enumerate(MANY) if n not in touched}
    assert replayed == again == survivors
    # Only damage to the last record may pass for a torn tail.
    assert journal.damaged > 0 or touched <= {len(MANY) - 1}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_garbage_yields_no_records(garbage: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "j.log"
        path.write_bytes(garbage)
        assert Journal(path).replay() == {}


def test_a_large_stretch_of_garbage_costs_only_itself(tmp_path: Path) -> None:
    """Random bytes pass as a record with odds of about 2^-47 per byte (a length within the
    bounds, 2^-14, times a matching CRC, 2^-32): none here, and the scan stays quick."""
    path = tmp_path / "j.log"
    path.write_bytes(
        _journal_bytes(MANY[:20]) + random.Random(7).randbytes(1 << 20) + _journal_bytes(MANY[20:])
    )
    journal = Journal(path)
    assert journal.replay() == {r.message_id: r for r in MANY}
    assert journal.damaged == 1
    assert journal.damaged_copy.exists()


def test_lost_records_are_remembered_until_the_damaged_file_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    data = bytearray(_journal_bytes(MANY))
    data[SPANS[5] + 10] ^= 1
    path.write_bytes(bytes(data))
    journal = Journal(path)
    journal.replay()
    journal.close()
    assert journal.damaged_copy.read_bytes() == bytes(data)

    compacted = Journal(path)
    assert len(compacted.replay()) == len(MANY) - 1
    compacted.close()
    assert (compacted.damaged, compacted.lost_records) == (0, True)
    compacted.damaged_copy.unlink()
    cleared = Journal(path)
    assert len(cleared.replay()) == len(MANY) - 1
    cleared.close()
    assert not cleared.lost_records


def test_a_failed_append_is_cut_back_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk cuts a write short: the part written goes, and records appended once space
    is back are not stranded behind a torn one."""
    path = tmp_path / "j.log"
    journal = Journal(path)
    journal.replay()
    journal.append([record("a", 1), record("b", 1)])
    good_size = path.stat().st_size
    real_write, real_truncate = os.write, os.ftruncate
    full = {"disk": True, "truncate fails": False}

    def write(fd: int, data: memoryview) -> int:
        if not full["disk"]:
            return real_write(fd, data)
        written = real_write(fd, data[: len(data) // 2])
        full["disk"] = False  # the next call would fail: space ran out mid-append
        raise OSError(errno.ENOSPC, f"no space left after {written} bytes")

    def ftruncate(fd: int, length: int) -> None:
        if full["truncate fails"]:
            full["truncate fails"] = False
            raise OSError(errno.EIO, "cannot truncate now")
        real_truncate(fd, length)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    with pytest.raises(OSError, match="no space"):
        journal.append([record("c", 1), record("d", 1)])
    assert path.stat().st_size == good_size

    full.update({"disk": True, "truncate fails": True})
    with pytest.raises(OSError, match="no space"):
        journal.append([record("e", 1)])
    assert path.stat().st_size > good_size  # left torn: cut before the next append
    journal.append([record("f", 1)])
    journal.close()
    monkeypatch.undo()

    again = Journal(path)
    assert again.replay() == {k: record(k, 1) for k in ["a", "b", "f"]}
    assert again.damaged == 0


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
        await store.drained()  # its file written (until then it is served from the backlog)
        (tmp_path / "messages" / "k.msg").write_bytes(b"messagf")  # damaged by hand
        (tmp_path / "messages" / "stray.msg").write_bytes(b"no record")
        damaged = await store.get_verified("k")
        stray = await store.get_verified("stray")
        await store.put("k", b"repaired", Version(1, 2))
        repaired = await store.get_verified("k")
        await store.close()
        return damaged, stray, repaired

    assert asyncio.run(scenario()) == (None, None, (b"repaired", Version(1, 2)))
