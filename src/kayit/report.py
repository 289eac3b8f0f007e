"""The report a node logs every few seconds: counts for itself and, on the leader, for every
node; a line while messages wait for repair, while the node's own disk fails to sync, and
while copies wait for their files.

A report is lines with subjects; ``ChangeReport`` logs only the lines that are new or read
differently from the last report, so an idle cluster stays quiet and a line that no longer
holds (repair finished, the disk syncs again) is not repeated."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

from kayit.cluster.leader import MemberCounts
from kayit.cluster.repair import RepairProgress
from kayit.storage.store import SyncHealth

log = logging.getLogger(__name__)


class ReportLine(NamedTuple):
    subject: str  # what the line is about: the node, a member's id, repair, the disk
    text: str
    level: int = logging.INFO


def leader_report(
    address: str,
    term: int,
    messages: int,
    tolerance: int,
    members: Sequence[MemberCounts],
    own_disk: int,
    under_replicated: int,
    repair: RepairProgress,
    sync: SyncHealth,
    backlog: int = 0,
) -> list[ReportLine]:
    """``under_replicated``: messages repair has still to make whole; ``repair``: its pass;
    ``backlog``: committed copies of this node not in their files yet."""
    alive = sum(1 for m in members if m.alive)
    lines = [
        ReportLine(
            "node",
            f"leader {address} (term {term}): {messages} messages ({own_disk} on own disk), "
            f"TOLERANCE={tolerance}, {alive} of {len(members)} other nodes alive",
        ),
        *_sync_lines(sync),
        *_backlog_lines(backlog),
    ]
    if under_replicated:
        lines.append(
            ReportLine(
                "repair",
                f"under-replicated: {under_replicated} (repaired {repair.repaired} of "
                f"{repair.under_replicated} this pass)",
            )
        )
    lines += [
        ReportLine(
            f"member {m.node_id}",
            f"member {m.address} {'alive' if m.alive else 'DEAD'}, {m.assigned} assigned, "
            f"{'voter' if m.voter else 'learner'}, node {m.node_id}",
        )
        for m in members
    ]
    return lines


def member_report(
    address: str, messages: int, leader: str | None, sync: SyncHealth, backlog: int = 0
) -> list[ReportLine]:
    return [
        ReportLine(
            "node",
            f"member {address}: {messages} messages on disk; leader {leader or '(none known)'}",
        ),
        *_sync_lines(sync),
        *_backlog_lines(backlog),
    ]


class ChangeReport:
    """Logs, of each report, the lines that changed since the one before."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def changes(self, lines: Sequence[ReportLine]) -> list[ReportLine]:
        changed = [line for line in lines if self._last.get(line.subject) != line.text]
        self._last = {line.subject: line.text for line in lines}
        return changed

    def log(self, lines: Sequence[ReportLine]) -> None:
        for line in self.changes(lines):
            log.log(line.level, "%s", line.text)


def _sync_lines(sync: SyncHealth) -> list[ReportLine]:
    """A line while the node's last disk sync failed: what it stored since its last good
    sync is not on stable storage."""
    if not sync.error:
        return []
    return [
        ReportLine(
            "disk",
            f"disk sync FAILING: {sync.error} ({sync.failures} failed syncs since start)",
            logging.WARNING,
        )
    ]


def _backlog_lines(backlog: int) -> list[ReportLine]:
    """A line while committed copies wait for their files (they are in the copy log)."""
    if not backlog:
        return []
    return [ReportLine("backlog", f"backlog: {backlog} copies not in their .msg files yet")]
