"""Healing: nodes dead past a grace period lose their place and their copies are made
again on live nodes; a node that (re)joins, or comes back after being dead, has its copies
reconciled with the index; copies found lost or damaged are made again. All at a bounded
rate, so clients keep their share."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kayit.cluster.leader import ClusterError, Leader
from kayit.cluster.transport import MemberUnreachable

log = logging.getLogger(__name__)

_CONCURRENT_REPAIRS = 64


@dataclass(slots=True)
class RepairProgress:
    under_replicated: int = 0  # messages found missing copies in the current pass
    repaired: int = 0  # of those, made whole again
    failed: int = 0  # of those, tried and left for the next pass

    @property
    def untried(self) -> int:
        return self.under_replicated - self.repaired - self.failed


class Repairer:
    def __init__(
        self,
        leader: Leader,
        *,
        repair_after: float,
        rate: float,
        scrub_every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leader = leader
        # Nodes to reconcile with the index: at first every one, as a new leader knows
        # nothing of what they hold.
        self._joined: set[str] = set(leader.metadata.nodes)
        # The members when the index was last scanned for ids with too few holders: at
        # first none, so that a new leader finishes what an earlier one left.
        self._scanned_members: frozenset[str] = frozenset()
        self._scrub_every = scrub_every
        self._scrubbed_at = clock()
        self._repair_after = repair_after
        self._rate = rate
        self._clock = clock
        self.progress = RepairProgress()

    def lost_members(self) -> set[str]:
        membership = self._leader.membership
        return {
            m.node_id
            for m in membership.view()
            if not m.alive and membership.silent_for(m.node_id) > self._repair_after
        }

    @property
    def outstanding(self) -> int:
        """Messages known to lack copies that repair has still to make: those of the pass
        under way not tried yet, and those waiting for the next pass (its failures among
        them)."""
        return self.progress.untried + len(self._leader.under_replicated)

    def member_joined(self, node_id: str) -> None:
        self._joined.add(node_id)

    async def run(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            if self._clock() - self._scrubbed_at >= self._scrub_every:
                # A scrub: every live member's copies are read back and checked, so damage
                # is found even on copies nobody reads.
                self._scrubbed_at = self._clock()
                self._joined.update(self._leader.alive())
            alive = set(self._leader.alive())
            for node_id in sorted(self._joined & alive):
                self._joined.discard(node_id)
                await self.reconcile(node_id)
            lost = self.lost_members()
            ids = self._leader.held_by(lost) | self._leader.under_replicated
            members = frozenset(self._leader.metadata.nodes)
            if members != self._scanned_members:
                # A node left (its copies with it), or this leader is new.
                self._scanned_members = members
                ids |= set(self._leader.metadata.under_placed())
            self._leader.under_replicated.clear()
            if ids:
                await self.repair_pass(sorted(ids))

    async def reconcile(self, node_id: str) -> None:
        try:
            deleted = await self._leader.reconcile(node_id)
        except MemberUnreachable as error:
            log.warning("could not reconcile node %s: %s", node_id, error)
            self._leader.member_failed(node_id, error)
            self._joined.add(node_id)  # once it is heard from again
            return
        except ClusterError:
            return  # no longer leading
        if deleted:
            log.info("node %s reconciled: %d copies deleted", node_id, deleted)

    async def repair_pass(self, ids: list[str]) -> None:
        """Give each message its TOLERANCE + 1 copies again, ``rate`` per second at most."""
        self.progress = RepairProgress(under_replicated=len(ids))
        log.info("repairing %d under-replicated messages", len(ids))
        started = self._clock()
        for first in range(0, len(ids), _CONCURRENT_REPAIRS):
            window = ids[first : first + _CONCURRENT_REPAIRS]
            # Repairs of one window overlap, so their round trips (and batches) are shared.
            done = await asyncio.gather(*(self._leader.repair(key) for key in window))
            self.progress.repaired += sum(done)
            # A repair that failed (a member busy, a SET in the way) is tried again next pass.
            failed = [key for key, ok in zip(window, done, strict=True) if not ok]
            self.progress.failed += len(failed)
            self._leader.under_replicated.update(failed)
            ahead = (first + len(window)) / self._rate - (self._clock() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        log.info(
            "repair pass done: %d of %d messages have their copies again",
            self.progress.repaired,
            self.progress.under_replicated,
        )
