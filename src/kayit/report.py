"""The report a leader prints every few seconds and `kayit status` shows: counts per member."""

from __future__ import annotations

from collections.abc import Sequence

from kayit.cluster.leader import MemberCounts
from kayit.cluster.repair import RepairProgress


def leader_report(
    address: str,
    messages: int,
    tolerance: int,
    members: Sequence[MemberCounts],
    own_disk: int | None = None,
    repair: RepairProgress | None = None,
) -> str:
    alive = sum(1 for m in members if m.alive)
    on_own_disk = "" if own_disk is None else f" ({own_disk} on own disk)"
    lines = [
        f"leader {address}: {messages} messages{on_own_disk}, TOLERANCE={tolerance}, "
        f"{alive} of {len(members)} members alive"
    ]
    if repair is not None and repair.under_replicated:
        left = repair.under_replicated - repair.repaired
        lines.append(
            f"  under-replicated: {left} (repaired {repair.repaired} of "
            f"{repair.under_replicated} this pass)"
        )
    lines += [
        f"  member {m.address:<21} {'alive' if m.alive else 'DEAD':<5} "
        f"{m.assigned:>8} assigned {m.stored:>8} on disk"
        for m in members
    ]
    return "\n".join(lines)


def member_report(address: str, messages: int, leader: str, connected: bool) -> str:
    state = "connected to" if connected else "waiting for"
    return f"member {address}: {messages} messages on disk; {state} leader {leader}"
