"""What the client connections of one node share: their number, and the bytes of requests
still arriving. Each connection's own limits (unread replies, idle time) are its own business
(``kayit.server.gateway``); the defaults are in ``kayit.config``.
"""

from __future__ import annotations

import logging
import resource
from typing import Protocol

log = logging.getLogger(__name__)

# Open files a node needs besides its clients: its gRPC channels, data files, journal, logs.
_RESERVED_FILES = 128


class PartialHolder(Protocol):
    def refuse_partial(self, held: int) -> None:
        """Answer ERROR LIMIT, drop the unfinished request and close."""


class PartialLines:
    """Bytes of unfinished requests (a line or RESP array whose end has not arrived) held by
    all connections. Past ``budget`` the connection holding the most is refused: the others,
    and the memory of the node, are spared whichever connections grow. (Pausing them all
    instead would stall every client behind a few that never finish their lines.)"""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._held: dict[PartialHolder, int] = {}

    def hold(self, holder: PartialHolder, size: int) -> None:
        """``holder`` now holds ``size`` bytes of an unfinished request (0: none)."""
        self.used += size - self._held.pop(holder, 0)
        if size:
            self._held[holder] = size
        while self.used > self.budget:
            largest = max(self._held, key=self._held.__getitem__)
            held = self._held.pop(largest)
            self.used -= held
            largest.refuse_partial(held)

    def release(self, holder: PartialHolder) -> None:
        self.hold(holder, 0)


class ClientSlots:
    """At most ``limit`` client connections at once, across the node's client ports."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def give(self) -> None:
        self.used -= 1


def fit_open_files(max_clients: int) -> int:
    """Raise this process's limit of open files so ``max_clients`` connections fit, as far as
    the hard limit allows; returns how many clients do fit (with a warning if fewer)."""
    wanted = max_clients + _RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as error:
            log.warning("cannot raise the limit of open files to %d: %s", raised, error)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_clients
    fitting = max(1, soft - _RESERVED_FILES)
    log.warning(
        "this process may open only %d files: at most %d clients will be served, not the %d "
        "of --max-clients (raise `ulimit -n`)",
        soft,
        fitting,
        max_clients,
    )
    return fitting
