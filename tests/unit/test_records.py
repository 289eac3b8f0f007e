"""Append-only files of CRC-checked records, and their two damage policies."""

from __future__ import annotations

import errno
import itertools
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kayit.storage.records import FRAME_SIZE, OnDamage, RecordFormat, RecordWriter, scan

FORMAT = RecordFormat(min_body=2, max_body=300)


def as_text(body: bytes) -> str:
    """A strict decoder, as real ones are: what is not ASCII is not a record."""
    return body.decode("ascii")


BODIES = [f"record {n} ".encode() * (1 + n % 5) for n in range(30)]
SPANS = list(itertools.accumulate((FRAME_SIZE + len(b) for b in BODIES), initial=0))
TEXTS = [body.decode() for body in BODIES]


def file_of(bodies: list[bytes]) -> bytes:
    return FORMAT.frames(bodies)


@given(st.lists(st.binary(min_size=2, max_size=300), max_size=20), st.sampled_from(OnDamage))
def test_what_is_framed_reads_back(bodies: list[bytes], on_damage: OnDamage) -> None:
    data = file_of(bodies)
    found = scan(data, FORMAT, bytes, on_damage)
    assert (found.records, found.end, found.damaged) == (bodies, len(data), 0)


def test_a_body_outside_the_bounds_is_refused() -> None:
    for body in [b"x", bytes(301)]:
        with pytest.raises(ValueError, match=r"outside 2\.\.300"):
            FORMAT.frame(body)


@pytest.mark.parametrize("cut", [1, 3, FRAME_SIZE, FRAME_SIZE + 1])
def test_a_torn_tail_is_dropped_without_counting_damage(cut: int) -> None:
    data = file_of(BODIES)[:-cut]
    for on_damage in OnDamage:
        found = scan(data, FORMAT, as_text, on_damage)
        assert found.records == TEXTS[:-1]
        assert (found.end, found.damaged) == (SPANS[-2], 0)


def test_zeros_after_the_last_record_are_a_torn_tail() -> None:
    found = scan(file_of(BODIES) + bytes(4096), FORMAT, as_text, OnDamage.STOP)
    assert (found.records, found.damaged) == (TEXTS, 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, SPANS[-1] - 1), st.integers(1, 255))
def test_damage_stops_one_policy_and_costs_the_other_only_its_record(
    position: int, mask: int
) -> None:
    data = bytearray(file_of(BODIES))
    data[position] ^= mask
    hit = next(n for n in range(len(BODIES)) if position < SPANS[n + 1])

    stopped = scan(bytes(data), FORMAT, as_text, OnDamage.STOP)
    assert stopped.records == TEXTS[:hit]
    assert stopped.end == SPANS[hit]

    resynced = scan(bytes(data), FORMAT, as_text, OnDamage.RESYNC)
    assert resynced.records == TEXTS[:hit] + TEXTS[hit + 1 :]
    # Only damage to the last record may pass for a torn tail.
    assert resynced.damaged == 1 or hit == len(BODIES) - 1


def test_a_body_that_does_not_decode_is_damage() -> None:
    data = file_of([b"good", "\u00e7\u00fc".encode(), b"after"])
    assert scan(data, FORMAT, as_text, OnDamage.STOP).records == ["good"]
    resynced = scan(data, FORMAT, as_text, OnDamage.RESYNC)
    assert (resynced.records, resynced.damaged) == (["good", "after"], 1)


def test_an_error_other_than_a_bad_body_comes_out_of_the_scan() -> None:
    def refuse(body: bytes) -> bytes:
        raise LookupError("written by a newer version")

    with pytest.raises(LookupError):
        scan(file_of([b"ab"]), FORMAT, refuse, OnDamage.STOP)


def test_appended_records_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "records"
    path.write_bytes(file_of(BODIES[:3]))
    writer = RecordWriter(path, FORMAT)
    writer.append(BODIES[3:10])
    writer.append([])
    writer.append(iter(BODIES[10:]))
    writer.sync()
    writer.close()
    assert scan(path.read_bytes(), FORMAT, as_text, OnDamage.STOP).records == TEXTS


def test_a_failed_append_is_cut_back_now_or_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk takes half an append: the half goes, so later records are not stranded
    behind a torn one, even when cutting back fails the first time."""
    path = tmp_path / "records"
    path.write_bytes(b"")
    writer = RecordWriter(path, FORMAT)
    writer.append(BODIES[:2])
    real_write, real_truncate = os.write, os.ftruncate
    faults = {"full": 0, "truncate fails": False}

    def write(fd: int, data: memoryview) -> int:
        if not faults["full"]:
            return real_write(fd, data)
        faults["full"] -= 1
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "no space left on device")

    def ftruncate(fd: int, length: int) -> None:
        if faults["truncate fails"]:
            faults["truncate fails"] = False
            raise OSError(errno.EIO, "cannot truncate now")
        real_truncate(fd, length)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    faults["full"] = 1
    with pytest.raises(OSError, match="no space"):
        writer.append(BODIES[2:4])
    assert path.stat().st_size == SPANS[2]

    faults.update({"full": 1, "truncate fails": True})
    with pytest.raises(OSError, match="no space"):
        writer.append(BODIES[4:6])
    assert path.stat().st_size > SPANS[2]  # left torn: cut before the next append
    writer.append(BODIES[6:8])
    writer.close()
    monkeypatch.undo()

    found = scan(path.read_bytes(), FORMAT, as_text, OnDamage.STOP)
    assert (found.records, found.damaged) == (TEXTS[:2] + TEXTS[6:8], 0)


def test_garbage_yields_no_records_under_either_policy() -> None:
    data = random.Random(3).randbytes(1 << 16)
    for on_damage in OnDamage:
        assert scan(data, FORMAT, as_text, on_damage).records == []
