"""Re-replication: members dead past a grace period lose their place, and their copies are
made again on live members, at a bounded rate so client traffic keeps its share."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kayit.cluster.leader import Leader

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RepairProgress:
    under_replicated: int = 0  # messages found missing copies in the current pass
    repaired: int = 0  # of those, made whole again


class Repairer:
    def __init__(
        self,
        leader: Leader,
        *,
        repair_after: float,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leader = leader
        self._repair_after = repair_after
        self._rate = rate
        self._clock = clock
        self.progress = RepairProgress()

    def lost_members(self) -> set[str]:
        membership = self._leader.membership
        return {
            m.address
            for m in membership.view()
            if not m.alive and membership.silent_for(m.address) > self._repair_after
        }

    async def run(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            lost = self.lost_members()
            if lost:
                await self.repair_pass(lost)

    async def repair_pass(self, lost: set[str]) -> None:
        """One pass over the messages held by ``lost``, ``rate`` messages per second at most."""
        ids = self._leader.index.held_by(lost)
        self.progress = RepairProgress(under_replicated=len(ids))
        if not ids:
            return
        log.info("repairing %d messages held by %s", len(ids), ", ".join(sorted(lost)))
        started = self._clock()
        for done, message_id in enumerate(ids, start=1):
            if await self._leader.repair(message_id):
                self.progress.repaired += 1
            ahead = done / self._rate - (self._clock() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        log.info(
            "repair pass done: %d of %d messages have their copies again",
            self.progress.repaired,
            self.progress.under_replicated,
        )
