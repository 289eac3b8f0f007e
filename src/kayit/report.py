"""The report a leader prints every few seconds and `kayit status` shows: counts per node."""

from __future__ import annotations

from collections.abc import Sequence

from kayit.cluster.leader import MemberCounts
from kayit.cluster.repair import RepairProgress


def leader_report(
    address: str,
    term: int,
    messages: int,
    tolerance: int,
    members: Sequence[MemberCounts],
    own_disk: int | None = None,
    repair: RepairProgress | None = None,
) -> str:
    alive = sum(1 for m in members if m.alive)
    on_own_disk = "" if own_disk is None else f" ({own_disk} on own disk)"
    lines = [
        f"leader {address} (term {term}): {messages} messages{on_own_disk}, "
        f"TOLERANCE={tolerance}, {alive} of {len(members)} other nodes alive"
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


def member_report(address: str, messages: int, leader: str | None) -> str:
    return f"member {address}: {messages} messages on disk; leader {leader or '(none known)'}"
