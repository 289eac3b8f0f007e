"""LoopClock: time as the leader's own event loop lived it, for judging members' silence.

A leader that was stopped (SIGSTOP, a VM pause, a long GC) heard nothing while it was stopped;
by the monotonic clock every member would then look silent for that long and be declared dead.
This clock advances with the monotonic clock, but a gap between two of its ticks longer than
``cap`` counts as only ``cap``: a member is judged only over time in which the leader ran.

For failure detection only. Anything that guards correctness (leases, later) must use
time.monotonic(), never this clock: it runs slow whenever the leader does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

_CAP_PERIODS = 3  # a tick this many periods late means the loop did not run meanwhile


class LoopClock:
    def __init__(self, period: float, source: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._cap = _CAP_PERIODS * period
        self._source = source
        self._last_tick = source()
        self._ticked = 0.0  # loop time up to the last tick

    def __call__(self) -> float:
        """Seconds of loop time since the clock was made; never decreases."""
        return self._ticked + min(self._source() - self._last_tick, self._cap)

    def tick(self) -> None:
        now = self._source()
        self._ticked += min(now - self._last_tick, self._cap)
        self._last_tick = now

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.tick()
