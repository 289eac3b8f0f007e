"""Placement: which members hold a message. A pure function of load, liveness and tolerance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def choose_holders(
    load: Mapping[str, int],
    candidates: Sequence[str],
    count: int,
    keep: Sequence[str] = (),
) -> list[str] | None:
    """``keep`` (current holders still alive) plus the least-loaded other candidates, up to
    ``count``; None when there are not enough candidates.

    Ties go to the earlier candidate, so equal loads fill members in a fixed rotation: with
    TOLERANCE=2 and 4 members, 1000 new ids land exactly 500 on each.
    """
    chosen = list(keep[:count])
    if len(chosen) == count:
        return chosen
    rank = {address: position for position, address in enumerate(candidates)}
    others = sorted(
        (address for address in candidates if address not in chosen),
        key=lambda address: (load.get(address, 0), rank[address]),
    )
    chosen += others[: count - len(chosen)]
    return chosen if len(chosen) == count else None
