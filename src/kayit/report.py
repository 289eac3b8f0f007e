"""The report a node prints every few seconds and `kayit status` shows: counts per node, and
a line while the node's own disk fails to sync."""

from __future__ import annotations

from collections.abc import Sequence

from kayit.cluster.leader import MemberCounts
from kayit.cluster.repair import RepairProgress
from kayit.storage.store import SyncHealth

_SYNCING = SyncHealth()


def leader_report(
    address: str,
    term: int,
    messages: int,
    tolerance: int,
    members: Sequence[MemberCounts],
    own_disk: int | None = None,
    repair: RepairProgress | None = None,
    sync: SyncHealth = _SYNCING,
    backlog: int = 0,
) -> str:
    alive = sum(1 for m in members if m.alive)
    on_own_disk = "" if own_disk is None else f" ({own_disk} on own disk)"
    lines = [
        f"leader {address} (term {term}): {messages} messages{on_own_disk}, "
        f"TOLERANCE={tolerance}, {alive} of {len(members)} other nodes alive",
        *_sync_lines(sync),
        *_backlog_lines(backlog),
    ]
    if repair is not None and repair.under_replicated:
        left = repair.under_replicated - repair.repaired
        lines.append(
            f"  under-replicated: {left} (repaired {repair.repaired} of "
            f"{repair.under_replicated} this pass)"
        )
    lines += [
        f"  member {m.address:<21} {'alive' if m.alive else 'DEAD':<5} "
        f"{m.assigned:>8} assigned  {'voter' if m.voter else 'learner'} {m.node_id}"
        for m in members
    ]
    return "\n".join(lines)


def member_report(
    address: str,
    messages: int,
    leader: str | None,
    sync: SyncHealth = _SYNCING,
    backlog: int = 0,
) -> str:
    lines = [
        f"member {address}: {messages} messages on disk; leader {leader or '(none known)'}",
        *_sync_lines(sync),
        *_backlog_lines(backlog),
    ]
    return "\n".join(lines)


def _sync_lines(sync: SyncHealth) -> list[str]:
    """A line while the node's last disk sync failed: what it stored since its last good
    sync is not on stable storage."""
    if not sync.error:
        return []
    return [f"  disk sync FAILING: {sync.error} ({sync.failures} failed syncs since start)"]


def _backlog_lines(backlog: int) -> list[str]:
    """A line while committed copies wait for their files (they are in the copy log)."""
    return [f"  backlog: {backlog} copies not in their .msg files yet"] if backlog else []
