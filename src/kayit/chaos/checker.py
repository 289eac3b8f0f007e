"""Linearizability of a history, key by key: each key is a register that starts as NOT_FOUND.

Linearizability is compositional, so every key is checked alone. An operation A precedes B
when A completed strictly before B was invoked; a valid order must respect that, put each
operation at one instant, and make every GET return the last value SET before it.

What is known of each operation. A FAIL SET never took effect and is ignored, as is any GET
that is not OK (its value is unknown). An INFO SET may have taken effect at any time after its
invocation, even after the client gave up, or never: if nobody read its value it is dropped
(never taking effect is always a valid choice), otherwise it counts as completing at +infinity.

Unique values: zones, O(n log n). When every SET of a key wrote its own value (the harness
makes them so), each GET names the SET it saw, and the method of Gibbons and Korach (1997)
decides. A SET and the GETs that returned its value form a cluster; the initial NOT_FOUND is a
cluster whose SET completed at -infinity. Between a SET and a GET of its value no other value
can be current, so in a valid order a cluster is one unbroken run: its SET, then its GETs.
Cluster A must run before cluster B iff an operation of A precedes one of B, i.e. iff
f(A) < s(B), where f is the earliest completion in a cluster and s its latest invocation. So
the history is linearizable iff (1) every GET returned NOT_FOUND or a value some kept SET wrote,
(2) no GET precedes the SET it read, and (3) "must run before" has no cycle. A cycle needs a
pair that clash, each before the other (f(A) < s(B) and f(B) < s(A)): along a cycle without
such a pair, f(X) < s(Y) <= f(Z) for steps X -> Y -> Z, so f would grow around it. Calling
(f, s) a forward zone when f < s and a backward zone otherwise, clashes are exactly: two
forward zones whose open intervals overlap, or a backward zone [s, f] inside the open interval
of a forward zone; two backward zones never clash. Sorting forward zones by f finds both.

Repeated values: a search over orders in the manner of Wing and Gong, with Lowe's memoization
of (operations placed, register value) as Porcupine does, within a budget of states; a key
whose search runs out of budget is "unknown". The search is also the reference the tests
compare the zones against.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kayit.chaos.history import Kind, Op, Outcome

Status = Literal["ok", "violation", "unknown"]

NEVER_WRITTEN = "read of a value never written"
FUTURE_READ = "read from the future"
OUT_OF_ORDER = "values read out of order"
OVERWRITTEN = "lost write or stale read"
NO_ORDER = "no order of the operations fits a register"
OUT_OF_BUDGET = "search budget exhausted"

DEFAULT_BUDGET = 500_000  # search states per key
WINDOW_LIMIT = 20


@dataclass
class KeyVerdict:
    """The check of one key. For a violation, ``window`` holds operations that prove it, sorted
    by invocation; for "unknown", those where the search was when it gave up."""

    key: str
    status: Status
    reason: str = ""
    window: list[Op] = field(default_factory=list)


def check(ops: Iterable[Op], budget: int = DEFAULT_BUDGET) -> list[KeyVerdict]:
    """One verdict per key, sorted by key."""
    by_key = _by_key(ops)
    return [check_key(by_key[key], budget) for key in sorted(by_key)]


def window_lines(verdict: KeyVerdict, origin: float) -> list[str]:
    """The verdict as text: a heading, then its window with times from ``origin`` (the
    history's first invocation)."""
    head = f"key {verdict.key}: {verdict.status}" + (
        f": {verdict.reason}" if verdict.reason else ""
    )
    return [head, *(f"  {op.describe(origin)}" for op in verdict.window)]


def check_key(ops: Sequence[Op], budget: int = DEFAULT_BUDGET) -> KeyVerdict:
    """The verdict on one key's operations: by zones when SET values are unique, else by search."""
    kept = _relevant(ops)
    if _unique_values(kept):
        return _zones(ops, kept)
    return check_search(kept, budget)


def lost_writes(ops: Iterable[Op]) -> list[Op]:
    """OK SETs that the last OK GET of their key (by invocation) proves lost: the SET completed
    before that GET was invoked, yet the GET returned NOT_FOUND or a value whose every SET
    completed before the lost one was invoked."""
    by_key = _by_key(ops)
    return [lost for key in sorted(by_key) for lost in _lost_in_key(by_key[key])]


# Zones.


@dataclass(slots=True)
class _Cluster:
    """A SET and the GETs of its value. ``first_done`` completed at ``f``, ``last_start`` was
    invoked at ``s``; all three ops are None for the initial NOT_FOUND."""

    write: Op | None
    first_done: Op | None
    last_start: Op | None
    f: float
    s: float

    def add_read(self, read: Op) -> None:
        if read.completed < self.f:
            self.f, self.first_done = read.completed, read
        if read.invoked > self.s:
            self.s, self.last_start = read.invoked, read

    def proof(self) -> list[Op]:
        ops = (self.write, self.first_done, self.last_start)
        return [op for op in ops if op is not None]

    @property
    def value(self) -> str | None:
        return None if self.write is None else self.write.value


def check_zones(ops: Sequence[Op]) -> KeyVerdict:
    """The zone method on one key whose SETs (once irrelevant ones are dropped) wrote distinct
    values; raises ValueError otherwise."""
    kept = _relevant(ops)
    if not _unique_values(kept):
        raise ValueError("SET values repeat: use check_search")
    return _zones(ops, kept)


def _zones(ops: Sequence[Op], kept: list[Op]) -> KeyVerdict:
    key = ops[0].key if ops else ""
    writes = {op.value: op for op in kept if op.kind is Kind.SET}
    reads = sorted((op for op in kept if op.kind is Kind.GET), key=lambda op: op.invoked)
    for read in reads:
        write = writes.get(read.value)
        if read.value is not None and write is None:
            failed = [op for op in ops if op.kind is Kind.SET and op.value == read.value]
            return _violation(key, f"{NEVER_WRITTEN}: {_shown(read.value)}", [read, *failed])
        if write is not None and read.completed < write.invoked:
            return _violation(key, f"{FUTURE_READ}: {_shown(read.value)}", [write, read])
    clusters = _clusters(writes.values(), reads)
    forward = sorted((c for c in clusters if c.f < c.s), key=lambda c: c.f)
    backward = [c for c in clusters if c.s <= c.f]
    pair = _overlapping(forward)
    if pair is not None:
        first, second = pair
        reason = (
            f"{OUT_OF_ORDER}: {_shown(first.value)} and {_shown(second.value)} were each"
            " read after the other was current"
        )
        return _violation(key, reason, first.proof() + second.proof())
    pair = _enclosed(forward, backward)
    if pair is not None:
        outer, inner = pair
        reason = (
            f"{OVERWRITTEN}: {_shown(inner.value)} was written, and done, after"
            f" {_shown(outer.value)} was current and before it was read again"
        )
        return _violation(key, reason, outer.proof() + inner.proof())
    return KeyVerdict(key, "ok")


def _clusters(writes: Iterable[Op], reads: Iterable[Op]) -> list[_Cluster]:
    initial = _Cluster(None, None, None, -math.inf, -math.inf)
    by_value: dict[str | None, _Cluster] = {None: initial}
    for write in writes:
        by_value[write.value] = _Cluster(write, write, write, _completion(write), write.invoked)
    for read in reads:
        by_value[read.value].add_read(read)
    return list(by_value.values())


def _overlapping(forward: list[_Cluster]) -> tuple[_Cluster, _Cluster] | None:
    """Two forward zones whose open intervals overlap, if any. Sorted by f, the zones are
    disjoint iff each opens no earlier than the one before it closes."""
    for before, zone in itertools.pairwise(forward):
        if zone.f < before.s:
            return before, zone
    return None


def _enclosed(
    forward: list[_Cluster], backward: list[_Cluster]
) -> tuple[_Cluster, _Cluster] | None:
    """A backward zone inside a forward one. The forward zones are disjoint and sorted, so only
    the last one opening before a backward zone starts can hold it."""
    opens = [zone.f for zone in forward]
    for inner in backward:
        at = bisect.bisect_left(opens, inner.s) - 1
        if at >= 0 and inner.f < forward[at].s:
            return forward[at], inner
    return None


# Search.


def check_search(ops: Sequence[Op], budget: int = DEFAULT_BUDGET) -> KeyVerdict:
    """Depth-first search for a valid order of one key's operations. Every OK operation must be
    placed; an INFO SET may be placed any time after its invocation, or never (so one whose
    value nobody read is left out)."""
    key = ops[0].key if ops else ""
    order = sorted(_relevant(ops), key=lambda op: op.invoked)
    search = _Search(order)
    status = search.run(budget)
    if status == "ok":
        return KeyVerdict(key, "ok")
    window = search.stuck_window()
    if status == "unknown":
        return KeyVerdict(key, "unknown", f"{OUT_OF_BUDGET} ({budget} states)", window)
    reason = f"{NO_ORDER}: the furthest order found stalls here ({search.expanded} states)"
    return _violation(key, reason, window)


# A state: (lo, rest, value). Every operation before index lo is placed, bit j of rest says
# whether operation lo + j is, and value is the register's. Keeping only the part of the
# placed set past lo keeps states small however long the history is.
_State = tuple[int, int, str | None]


class _Search:
    def __init__(self, order: list[Op]) -> None:
        self.order = order
        self.starts = [op.invoked for op in order]
        self.ends = [_completion(op) for op in order]
        self.required = sum(op.outcome is Outcome.OK for op in order)
        self.writers: dict[str | None, list[int]] = defaultdict(list)
        for index, op in enumerate(order):
            if op.kind is Kind.SET:
                self.writers[op.value].append(index)
        self.expanded = 0
        self.deepest: tuple[int, _State] = (0, (0, 0, None))  # most OK operations placed

    def run(self, budget: int) -> Status:
        start: _State = (0, 0, None)
        seen = {start}
        stack: list[tuple[_State, int]] = [(start, 0)]  # with the count of OK ops placed
        while stack:
            state, placed = stack.pop()
            if placed == self.required:
                return "ok"
            if placed > self.deepest[0]:
                self.deepest = (placed, state)
            if self.expanded == budget:
                return "unknown"
            self.expanded += 1
            for after, gained in self._steps(state):
                if after not in seen:
                    seen.add(after)
                    stack.append((after, placed + gained))
        return "violation"

    def _steps(self, state: _State) -> list[tuple[_State, int]]:
        """The states one step on, each with the number of OK operations it adds, the one to
        try first last. A GET of the current value that may go next is the only step taken
        when there is one: any valid order from here stays valid with it moved first."""
        lo, rest, value = state
        candidates = self._candidates(lo, rest)
        for index in candidates:
            op = self.order[index]
            if op.kind is Kind.GET and op.value == value:
                return [((*_place(lo, rest, index - lo), value), 1)]
            if op.kind is Kind.GET and not self._may_be_written(op.value, lo, rest):
                return []  # the value it read is gone for good
        # First try SETs that a GET which may go next is waiting for, earliest done first.
        wanted = {self.order[i].value for i in candidates if self.order[i].kind is Kind.GET}
        sets = [i for i in candidates if self.order[i].kind is Kind.SET]
        sets.sort(key=lambda i: (self.order[i].value in wanted, -self.ends[i]))
        return [((*_place(lo, rest, i - lo), self.order[i].value), self._gain(i)) for i in sets]

    def _may_be_written(self, value: str | None, lo: int, rest: int) -> bool:
        """Whether some SET of this value is still unplaced."""
        return any(i >= lo and not rest >> (i - lo) & 1 for i in self.writers.get(value, ()))

    def _gain(self, index: int) -> int:
        return 1 if self.order[index].outcome is Outcome.OK else 0

    def _candidates(self, lo: int, rest: int) -> list[int]:
        """Unplaced operations that no unplaced operation precedes. Relies on invoked <=
        completed: an operation invoked after the bound cannot lower it."""
        found: list[int] = []
        bound = math.inf  # earliest completion of an unplaced operation so far
        index = lo
        while index < len(self.order) and self.starts[index] <= bound:
            if not rest >> (index - lo) & 1:
                found.append(index)
                bound = min(bound, self.ends[index])
            index += 1
        return found

    def stuck_window(self) -> list[Op]:
        """The operations that could come next in the furthest state reached, with the few
        placed just before them."""
        _, (lo, rest, _) = self.deepest
        ahead = self._candidates(lo, rest)
        behind = list(range(max(0, lo - 4), lo))
        return [self.order[i] for i in behind + ahead][:WINDOW_LIMIT]


def _place(lo: int, rest: int, offset: int) -> tuple[int, int]:
    rest |= 1 << offset
    run = (~rest & (rest + 1)).bit_length() - 1  # trailing placed operations
    return lo + run, rest >> run


# Shared.


def _by_key(ops: Iterable[Op]) -> dict[str, list[Op]]:
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    return by_key


def _relevant(ops: Sequence[Op]) -> list[Op]:
    """OK GETs, OK SETs and the INFO SETs whose value some OK GET returned."""
    read = {op.value for op in ops if op.kind is Kind.GET and op.outcome is Outcome.OK}
    return [op for op in ops if op.outcome is Outcome.OK or (_may_act(op) and op.value in read)]


def _may_act(op: Op) -> bool:
    """An OK operation, or an INFO SET: it may have taken effect."""
    return op.outcome is Outcome.OK or (op.kind is Kind.SET and op.outcome is Outcome.INFO)


def _unique_values(ops: Iterable[Op]) -> bool:
    written: set[str | None] = {None}  # NOT_FOUND is the initial value's
    for op in ops:
        if op.kind is Kind.SET:
            if op.value in written:
                return False
            written.add(op.value)
    return True


def _completion(op: Op) -> float:
    """When the op had surely taken effect: an INFO SET's completion is unknown."""
    return math.inf if op.outcome is Outcome.INFO else op.completed


def _lost_in_key(ops: list[Op]) -> list[Op]:
    reads = [op for op in ops if op.kind is Kind.GET and op.outcome is Outcome.OK]
    if not reads:
        return []
    last = max(reads, key=lambda op: (op.invoked, op.completed))
    acked = [
        op
        for op in ops
        if op.kind is Kind.SET and op.outcome is Outcome.OK and op.completed < last.invoked
    ]
    if last.value is None:
        return sorted(acked, key=lambda op: op.invoked)
    writers = [
        op
        for op in ops
        if op.kind is Kind.SET and op.value == last.value and op.outcome is not Outcome.FAIL
    ]
    if not writers:
        return []  # a value never written: the checker's verdict, not a lost write
    written_by = max(_completion(op) for op in writers)
    return sorted((op for op in acked if written_by < op.invoked), key=lambda op: op.invoked)


def _violation(key: str, reason: str, ops: Iterable[Op]) -> KeyVerdict:
    unique = list({id(op): op for op in ops}.values())
    window = sorted(unique, key=lambda op: op.invoked)[:WINDOW_LIMIT]
    return KeyVerdict(key, "violation", reason, window)


def _shown(value: str | None, limit: int = 24) -> str:
    if value is None:
        return "NOT_FOUND"
    return repr(value if len(value) <= limit else value[:limit] + "...")
