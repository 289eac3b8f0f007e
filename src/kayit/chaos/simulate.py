"""Random histories of a correct register store, to test and time the linearizability checker.

Processes run one operation at a time on random keys. Each operation takes effect at one
instant inside its interval and the instants are applied in order to one register per key, so
every history made here is linearizable by construction. Faults show only in outcomes: a FAIL
SET never takes effect; an INFO SET takes effect or not, possibly after the client gave up on
it (as a leader may finish a write whose client timed out); a GET that fails or times out reads
nothing.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from kayit.chaos.history import Kind, Op, Outcome


@dataclass(frozen=True, slots=True)
class Workload:
    ops: int = 1000
    keys: int = 3
    processes: int = 4
    get_share: float = 0.5  # of all operations
    set_fail: float = 0.05  # of SETs
    set_info: float = 0.12  # of SETs; half of them take effect
    get_unknown: float = 0.05  # of GETs, half FAIL and half INFO
    latency: float = 1.0  # mean time from invocation to completion
    think: float = 0.3  # mean pause between two operations of a process


@dataclass(slots=True)
class _Draft:
    process: int
    kind: Kind
    key: str
    value: str | None
    invoked: float
    completed: float
    outcome: Outcome
    effect: float | None  # when it acts on the register; None: never


def simulate(workload: Workload, rng: random.Random) -> list[Op]:
    """A linearizable history of ``workload.ops`` operations, sorted by invocation."""
    drafts = _schedule(workload, rng)
    _apply_in_effect_order(drafts)
    ops = [
        Op(d.process, d.kind, d.key, d.value, d.invoked, d.completed, d.outcome, _error(d.outcome))
        for d in drafts
    ]
    ops.sort(key=lambda op: op.invoked)
    return ops


def _schedule(workload: Workload, rng: random.Random) -> list[_Draft]:
    # Each process starts its next operation some think time after its last one completed;
    # the process that is free first goes next, so intervals of different processes overlap.
    free = [(0.0, process) for process in range(workload.processes)]
    drafts: list[_Draft] = []
    for number in range(workload.ops):
        ready, process = heapq.heappop(free)
        invoked = ready + rng.expovariate(1 / workload.think)
        latency = rng.expovariate(1 / workload.latency)
        completed = invoked + latency
        key = f"k{rng.randrange(workload.keys)}"
        if rng.random() < workload.get_share:
            drafts.append(_get(workload, rng, process, key, invoked, completed))
        else:
            drafts.append(
                _set(workload, rng, process, key, f"v{number}", invoked, completed, latency)
            )
        heapq.heappush(free, (completed, process))
    return drafts


def _get(
    workload: Workload,
    rng: random.Random,
    process: int,
    key: str,
    invoked: float,
    completed: float,
) -> _Draft:
    if rng.random() < workload.get_unknown:
        outcome = rng.choice([Outcome.FAIL, Outcome.INFO])
        return _Draft(process, Kind.GET, key, None, invoked, completed, outcome, None)
    effect = rng.uniform(invoked, completed)
    return _Draft(process, Kind.GET, key, None, invoked, completed, Outcome.OK, effect)


def _set(
    workload: Workload,
    rng: random.Random,
    process: int,
    key: str,
    value: str,
    invoked: float,
    completed: float,
    latency: float,
) -> _Draft:
    draw = rng.random()
    if draw < workload.set_fail:
        outcome, effect = Outcome.FAIL, None
    elif draw < workload.set_fail + workload.set_info:
        # Up to one more latency after the client stopped waiting.
        late = rng.uniform(invoked, completed + latency)
        outcome, effect = Outcome.INFO, late if rng.random() < 0.5 else None
    else:
        outcome, effect = Outcome.OK, rng.uniform(invoked, completed)
    return _Draft(process, Kind.SET, key, value, invoked, completed, outcome, effect)


def _apply_in_effect_order(drafts: list[_Draft]) -> None:
    """Play the effects on one register per key; a GET records what it found."""
    registers: dict[str, str | None] = {}
    effects = [(d.effect, n) for n, d in enumerate(drafts) if d.effect is not None]
    effects.sort()
    for _, n in effects:
        draft = drafts[n]
        if draft.kind is Kind.SET:
            registers[draft.key] = draft.value
        else:
            draft.value = registers.get(draft.key)


def _error(outcome: Outcome) -> str:
    return {Outcome.OK: "", Outcome.FAIL: "refused", Outcome.INFO: "timeout"}[outcome]
