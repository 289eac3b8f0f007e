"""Who the members are and which of them are alive: the one source of that truth."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Member:
    address: str
    last_heard: float
    stored: int  # messages the member last said it holds on disk
    failed: bool = False  # an RPC to it failed after it was last heard from


class Arrival(enum.Enum):
    """What hearing from a member means."""

    NEW = "new"  # not known before
    REVIVED = "revived"  # known and dead: its copies may have changed meanwhile
    LIVE = "live"  # known and alive


@dataclass(frozen=True, slots=True)
class MemberView:
    address: str
    alive: bool
    stored: int


class Membership:
    """Members are alive while they heartbeat; silent for ``dead_after`` seconds, or failing an
    RPC, they are dead and no longer chosen, until they are heard from again.

    ``clock`` measures silence; the node passes a LoopClock, so that time in which the leader
    itself was stopped does not count against its members."""

    def __init__(self, dead_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.dead_after = dead_after
        self._clock = clock
        self._members: dict[str, _Member] = {}  # in join order: the placement tie-break
        self._last_alive: dict[str, bool] = {}

    def heard_from(self, address: str, stored: int) -> Arrival:
        """Record a join or heartbeat."""
        member = self._members.get(address)
        if member is None:
            self._members[address] = _Member(address, self._clock(), stored)
            return Arrival.NEW
        arrival = Arrival.LIVE if self._alive(member) else Arrival.REVIVED
        member.last_heard = self._clock()
        member.stored = stored
        member.failed = False
        return arrival

    def is_known(self, address: str) -> bool:
        return address in self._members

    def mark_failed(self, address: str) -> None:
        member = self._members.get(address)
        if member is not None:
            member.failed = True

    def is_alive(self, address: str) -> bool:
        member = self._members.get(address)
        return member is not None and self._alive(member)

    def alive(self) -> list[str]:
        return [m.address for m in self._members.values() if self._alive(m)]

    def silent_for(self, address: str) -> float:
        """Seconds since the member was last heard from."""
        return self._clock() - self._members[address].last_heard

    def view(self) -> list[MemberView]:
        return [MemberView(m.address, self._alive(m), m.stored) for m in self._members.values()]

    def changes(self) -> list[MemberView]:
        """Members whose alive/dead state changed since the last call (for the log); a member
        first seen alive is not a change: its join is logged where it happens."""
        changed = []
        for member in self.view():
            before = self._last_alive.get(member.address, True)
            self._last_alive[member.address] = member.alive
            if before != member.alive:
                changed.append(member)
        return changed

    def _alive(self, member: _Member) -> bool:
        return not member.failed and self._clock() - member.last_heard <= self.dead_after
