"""Which of the other nodes are alive: the one source of that truth on the leader."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Member:
    node_id: str
    last_heard: float
    failed: bool = False  # an RPC to it failed after it was last heard from


class Arrival(enum.Enum):
    """What hearing from a node means."""

    NEW = "new"  # not known before
    REVIVED = "revived"  # known and dead: its copies may have changed meanwhile
    LIVE = "live"  # known and alive


@dataclass(frozen=True, slots=True)
class MemberView:
    node_id: str
    alive: bool


class Membership:
    """Nodes are alive while they are heard from (their Raft messages); silent for
    ``dead_after`` seconds, or failing an RPC, they are dead and no longer chosen, until they
    are heard from again.

    ``clock`` measures silence; the node passes a LoopClock, so that time in which the leader
    itself was stopped does not count against the others."""

    def __init__(self, dead_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.dead_after = dead_after
        self._clock = clock
        self._members: dict[str, _Member] = {}  # in order first heard: the placement tie-break
        self._last_alive: dict[str, bool] = {}

    def heard_from(self, node_id: str) -> Arrival:
        member = self._members.get(node_id)
        if member is None:
            self._members[node_id] = _Member(node_id, self._clock())
            return Arrival.NEW
        arrival = Arrival.LIVE if self._alive(member) else Arrival.REVIVED
        member.last_heard = self._clock()
        member.failed = False
        return arrival

    def expect(self, node_id: str) -> None:
        """Count a node not heard from yet as heard from now: a new leader gives every member
        ``dead_after`` to speak before its copies are placed elsewhere."""
        if node_id not in self._members:
            self._members[node_id] = _Member(node_id, self._clock())

    def mark_failed(self, node_id: str) -> None:
        member = self._members.get(node_id)
        if member is not None:
            member.failed = True

    def is_alive(self, node_id: str) -> bool:
        member = self._members.get(node_id)
        return member is not None and self._alive(member)

    def alive(self) -> list[str]:
        return [m.node_id for m in self._members.values() if self._alive(m)]

    def silent_for(self, node_id: str) -> float:
        """Seconds since the node was last heard from."""
        return self._clock() - self._members[node_id].last_heard

    def view(self) -> list[MemberView]:
        return [MemberView(m.node_id, self._alive(m)) for m in self._members.values()]

    def changes(self) -> list[MemberView]:
        """Nodes whose alive/dead state changed since the last call (for the log); a node
        first seen alive is not a change."""
        changed = []
        for member in self.view():
            before = self._last_alive.get(member.node_id, True)
            self._last_alive[member.node_id] = member.alive
            if before != member.alive:
                changed.append(member)
        return changed

    def _alive(self, member: _Member) -> bool:
        return not member.failed and self._clock() - member.last_heard <= self.dead_after
