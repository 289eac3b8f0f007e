"""LoopClock with a fake monotonic source: it follows the source while ticks come on time,
and counts a gap between ticks (the process was stopped) as only its cap."""

from __future__ import annotations

import asyncio

import pytest

from kayit.cluster.loop_clock import LoopClock


class Source:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_starts_at_zero_and_follows_the_source_while_ticks_are_on_time() -> None:
    source = Source()
    clock = LoopClock(period=0.1, source=source)
    assert clock() == 0.0
    for _ in range(50):
        source.now += 0.1
        clock.tick()
    assert clock() == pytest.approx(5.0)
    source.now += 0.05  # between ticks the reading moves on too
    assert clock() == pytest.approx(5.05)


def test_ticks_late_within_the_cap_still_count_in_full() -> None:
    source = Source()
    clock = LoopClock(period=0.1, source=source)
    source.now += 0.25  # a busy loop: 2.5 periods
    clock.tick()
    assert clock() == pytest.approx(0.25)


def test_a_gap_longer_than_the_cap_counts_as_the_cap() -> None:
    source = Source()
    clock = LoopClock(period=0.1, source=source)
    for _ in range(10):
        source.now += 0.1
        clock.tick()
    source.now += 5.0  # SIGSTOP: no tick for 5 s
    assert clock() == pytest.approx(1.3)  # read before the first tick after it, too
    clock.tick()
    assert clock() == pytest.approx(1.3)
    source.now += 0.1
    clock.tick()
    assert clock() == pytest.approx(1.4)


def test_readings_never_decrease() -> None:
    source = Source()
    clock = LoopClock(period=0.1, source=source)
    readings = []
    for step in [0.05, 0.5, 0.02, 2.0, 0.1, 0.0, 0.3, 7.0]:
        source.now += step
        readings.append(clock())
        clock.tick()
        readings.append(clock())
    assert readings == sorted(readings)


def test_run_ticks_on_the_event_loop() -> None:
    async def main() -> float:
        clock = LoopClock(period=0.01)
        ticking = asyncio.create_task(clock.run())
        await asyncio.sleep(0.2)
        ticking.cancel()
        return clock()

    assert 0.1 < asyncio.run(main()) < 1.0
