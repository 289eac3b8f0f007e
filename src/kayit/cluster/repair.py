"""Healing: members dead past a grace period lose their place and their copies are made
again on live members; a member that (re)joins has its copies reconciled with the index;
copies found lost or damaged are made again. All at a bounded rate, so clients keep their
share."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kayit.cluster.leader import Leader
from kayit.cluster.transport import MemberTransport, MemberUnreachable

log = logging.getLogger(__name__)

_CONCURRENT_REPAIRS = 64


@dataclass(slots=True)
class RepairProgress:
    under_replicated: int = 0  # messages found missing copies in the current pass
    repaired: int = 0  # of those, made whole again


class Repairer:
    def __init__(
        self,
        leader: Leader,
        transport: MemberTransport,
        *,
        repair_after: float,
        rate: float,
        scrub_every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leader = leader
        self._transport = transport
        self._joined: set[str] = set()  # members to reconcile with the index
        self._scrub_every = scrub_every
        self._scrubbed_at = clock()
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

    def member_joined(self, address: str) -> None:
        self._joined.add(address)

    async def run(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            if self._clock() - self._scrubbed_at >= self._scrub_every:
                # A scrub: every live member's copies are read back and checked, so damage
                # is found even on copies nobody reads.
                self._scrubbed_at = self._clock()
                self._joined.update(self._leader.membership.alive())
            while self._joined:
                await self.reconcile(self._joined.pop())
            lost = self.lost_members()
            ids = set(self._leader.index.held_by(lost)) if lost else set()
            ids |= self._leader.under_replicated
            self._leader.under_replicated.clear()
            if ids:
                await self.repair_pass(sorted(ids))

    async def reconcile(self, address: str) -> None:
        expected = self._leader.expected_on(address)
        try:
            held = await self._transport.inventory(address, verify=True)
            deleted = await self._leader.reconcile(address, expected, held)
        except MemberUnreachable as error:
            log.warning("could not reconcile member %s: %s", address, error)
            return
        log.info(
            "member %s reconciled: %d copies kept, %d deleted",
            address,
            len(held) - deleted,
            deleted,
        )

    async def repair_pass(self, ids: list[str]) -> None:
        """Give each message its TOLERANCE member copies again, ``rate`` per second at most."""
        self.progress = RepairProgress(under_replicated=len(ids))
        log.info("repairing %d under-replicated messages", len(ids))
        started = self._clock()
        for first in range(0, len(ids), _CONCURRENT_REPAIRS):
            window = ids[first : first + _CONCURRENT_REPAIRS]
            # Repairs of one window overlap, so their round trips (and batches) are shared.
            done = await asyncio.gather(*(self._leader.repair(key) for key in window))
            self.progress.repaired += sum(done)
            # A repair that failed (a member busy, a SET in the way) is tried again next pass.
            failed = (key for key, ok in zip(window, done, strict=True) if not ok)
            self._leader.under_replicated.update(failed)
            ahead = (first + len(window)) / self._rate - (self._clock() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        log.info(
            "repair pass done: %d of %d messages have their copies again",
            self.progress.repaired,
            self.progress.under_replicated,
        )
