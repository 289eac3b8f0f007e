"""Replicator deadlines: a copy's grows with its bytes and those queued ahead of it for its
member; past it the copy fails as slow, and a hung call frees its slot."""

from __future__ import annotations

import asyncio
import time

import pytest

from kayit.cluster.replicator import STORE_RATE, Replicator
from kayit.cluster.transport import Copy, MemberSlow
from kayit.version import Version

MiB = 1024 * 1024


class DiskBoundMember:
    """Stores one call at a time at ``rate`` bytes/s, as a member's single disk writer does;
    ``rate`` 0 hangs (a paused member). A call fails as slow when its deadline passes."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.timeouts: list[float] = []
        self.stored: list[str] = []
        self._disk = asyncio.Lock()

    async def store_many(self, address: str, copies: list[Copy], timeout: float) -> None:
        self.timeouts.append(timeout)
        try:
            async with asyncio.timeout(timeout), self._disk:
                size = sum(len(copy.message) for copy in copies)
                await asyncio.sleep(size / self.rate if self.rate else 3600)
        except TimeoutError:
            raise MemberSlow("DEADLINE_EXCEEDED") from None
        self.stored += [copy.message_id for copy in copies]


def copy(message_id: str, size: int) -> Copy:
    return Copy(message_id, b"x" * size, Version(1, 1))


def test_a_call_gets_the_base_timeout_plus_its_bytes_at_the_store_rate() -> None:
    member = DiskBoundMember(rate=1000 * MiB)

    async def main() -> None:
        await Replicator(member, store_timeout=0.2).store("m", copy("a", 4 * MiB))

    asyncio.run(main())
    assert member.stored == ["a"]
    assert member.timeouts == [pytest.approx(0.2 + 4 * MiB / STORE_RATE, abs=0.01)]


def test_a_hung_member_fails_a_copy_as_slow_after_its_deadline_and_frees_its_slot() -> None:
    member = DiskBoundMember(rate=0)

    async def main() -> float:
        replicator = Replicator(member, store_timeout=0.1, in_flight_per_member=1)
        started = time.monotonic()
        with pytest.raises(MemberSlow):
            await replicator.store("m", copy("a", 10))
        with pytest.raises(MemberSlow):  # the first call no longer holds the only slot
            await replicator.store("m", copy("b", 10))
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0
    assert len(member.timeouts) == 2


def test_a_copy_queued_behind_a_big_one_gets_time_for_the_bytes_ahead_of_it() -> None:
    """The member takes 0.5 s for the big copy, then the small one: far past the small one's
    base deadline, yet it is stored, as its deadline counts the bytes ahead of it."""
    member = DiskBoundMember(rate=8 * MiB)

    async def main() -> None:
        replicator = Replicator(member, store_timeout=0.1)
        big = asyncio.create_task(replicator.store("m", copy("big", 4 * MiB)))
        await asyncio.sleep(0)
        await replicator.store("m", copy("small", 10))
        await big

    asyncio.run(main())
    assert sorted(member.stored) == ["big", "small"]
    assert member.timeouts[1] > 4 * MiB / STORE_RATE


def test_deadlines_of_one_member_do_not_grow_with_another_members_backlog() -> None:
    member = DiskBoundMember(rate=1000 * MiB)

    async def main() -> None:
        replicator = Replicator(member, store_timeout=0.1)
        big = asyncio.create_task(replicator.store("m1", copy("big", 4 * MiB)))
        await asyncio.sleep(0)
        await replicator.store("m2", copy("small", 10))
        await big

    asyncio.run(main())
    assert member.timeouts[1] == pytest.approx(0.1, abs=0.01)
