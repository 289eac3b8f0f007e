"""The linearizability checker: simulated correct histories, hand-made violations, and the zone
method against the search, and the search against plain enumeration of orders."""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kayit.chaos.checker import (
    FUTURE_READ,
    NEVER_WRITTEN,
    NO_ORDER,
    OUT_OF_BUDGET,
    OUT_OF_ORDER,
    OVERWRITTEN,
    KeyVerdict,
    check,
    check_search,
    check_zones,
    lost_writes,
    window_lines,
)
from kayit.chaos.history import Kind, Op, Outcome
from kayit.chaos.simulate import Workload, simulate

OK, FAIL, INFO = Outcome.OK, Outcome.FAIL, Outcome.INFO
REASONS = (NEVER_WRITTEN, FUTURE_READ, OUT_OF_ORDER, OVERWRITTEN)


def put(
    value: str, start: float, end: float, outcome: Outcome = OK, process: int = 0, key: str = "k"
) -> Op:
    return Op(process, Kind.SET, key, value, start, end, outcome)


def get(
    value: str | None,
    start: float,
    end: float,
    outcome: Outcome = OK,
    process: int = 1,
    key: str = "k",
) -> Op:
    return Op(process, Kind.GET, key, value, start, end, outcome)


def verdict_of(ops: list[Op]) -> KeyVerdict:
    [verdict] = check(ops)
    return verdict


def assert_violation(ops: list[Op], reason: str, proof: list[Op]) -> None:
    verdict = verdict_of(ops)
    assert verdict.status == "violation"
    assert verdict.reason.startswith(reason), verdict.reason
    assert all(op in verdict.window for op in proof), verdict.window
    assert verdict.window == sorted(verdict.window, key=lambda op: op.invoked)


# Hand-made histories.


def test_reads_may_see_either_value_while_a_write_is_under_way() -> None:
    ops = [
        put("a", 0, 1),
        put("b", 2, 6),
        get("b", 3, 4),
        get("a", 3, 5, process=2),  # concurrent with the SET of b, which it may precede
        get("b", 7, 8),
    ]
    assert verdict_of(ops).status == "ok"


def test_a_lost_write_is_caught() -> None:
    first, second, stale = put("a", 0, 1), put("b", 2, 3), get("a", 4, 5)
    assert_violation([first, second, stale], OVERWRITTEN, [first, second, stale])
    assert lost_writes([first, second, stale]) == [second]


def test_a_stale_not_found_is_caught() -> None:
    written, stale = put("a", 0, 1), get(None, 2, 3)
    assert_violation([written, stale], OVERWRITTEN, [written, stale])


def test_a_stale_read_after_the_new_value_was_seen_is_caught() -> None:
    ops = [put("a", 0, 1), put("b", 2, 3), get("b", 4, 5), get("a", 6, 7, process=2)]
    assert_violation(ops, OUT_OF_ORDER, ops)


def test_an_older_value_read_after_a_newer_one_during_the_write_is_caught() -> None:
    # b's SET is still under way, but once a read has seen b, a later read may not see a.
    ops = [put("a", 0, 1), put("b", 2, 9), get("b", 3, 4), get("a", 5, 6, process=2)]
    assert_violation(ops, OVERWRITTEN, ops)


def test_a_read_of_a_value_never_written_is_caught() -> None:
    ghost = get("ghost", 0, 1)
    assert_violation([put("a", 0, 1), ghost], NEVER_WRITTEN, [ghost])


def test_a_read_of_a_value_only_a_failed_set_wrote_is_caught() -> None:
    refused, read = put("a", 0, 1, FAIL), get("a", 2, 3)
    assert_violation([refused, read], NEVER_WRITTEN, [refused, read])


def test_a_read_from_the_future_is_caught() -> None:
    early, write = get("a", 0, 1), put("a", 2, 3)
    assert_violation([early, write], FUTURE_READ, [early, write])


def test_an_info_set_that_was_read_may_take_effect_after_its_completion() -> None:
    ops = [put("a", 0, 1, INFO), put("b", 5, 6), get("b", 7, 8), get("a", 10, 11)]
    assert verdict_of(ops).status == "ok"
    acked = [put("a", 0, 1), *ops[1:]]
    assert verdict_of(acked).status == "violation"


def test_failed_sets_unread_info_sets_and_unknown_reads_are_ignored() -> None:
    ops = [
        put("a", 0, 1, FAIL),
        put("b", 0, 1, INFO),
        get("c", 2, 3, FAIL),
        get("d", 2, 3, INFO),
        get(None, 4, 5),
    ]
    assert verdict_of(ops).status == "ok"


def test_touching_intervals_are_concurrent() -> None:
    # The read is invoked at the instant the SET completes: either order is valid.
    assert verdict_of([put("a", 0, 2), get(None, 2, 3)]).status == "ok"
    assert verdict_of([put("a", 0, 2), get(None, 2.5, 3)]).status == "violation"


def test_repeated_values_are_searched() -> None:
    ops = [put("a", 0, 1), put("b", 2, 3), put("a", 4, 5, process=2), get("a", 6, 7)]
    assert verdict_of(ops).status == "ok"
    ops = [put("a", 0, 1), put("b", 2, 3), get("a", 4, 5), put("a", 6, 7, process=2)]
    verdict = verdict_of(ops)
    assert (verdict.status, verdict.reason.startswith(NO_ORDER)) == ("violation", True)
    assert ops[2] in verdict.window


def test_a_search_out_of_budget_is_unknown() -> None:
    ops = [put("a", 0, 1), put("a", 2, 3), get("a", 4, 5)]
    [verdict] = check(ops, budget=1)
    assert (verdict.status, verdict.reason.startswith(OUT_OF_BUDGET)) == ("unknown", True)


def test_the_zone_method_refuses_repeated_values() -> None:
    with pytest.raises(ValueError):
        check_zones([put("a", 0, 1), put("a", 2, 3)])


def test_keys_are_checked_apart_and_reported_in_order() -> None:
    ops = [put("a", 0, 1, key="y"), get(None, 2, 3, key="y"), put("a", 0, 1, key="x")]
    assert [(v.key, v.status) for v in check(ops)] == [("x", "ok"), ("y", "violation")]


def test_window_lines_describe_the_proof_from_the_origin() -> None:
    ops = [put("a", 100, 101), get(None, 102, 103)]
    lines = window_lines(verdict_of(ops), origin=100)
    assert lines[0].startswith(f"key k: violation: {OVERWRITTEN}")
    assert lines[1:] == [f"  {op.describe(100)}" for op in ops]


# lost_writes.


def test_a_set_is_lost_when_the_last_read_returns_not_found() -> None:
    acked = put("a", 0, 1)
    assert lost_writes([acked, get("a", 2, 3), get(None, 4, 5)]) == [acked]


def test_a_set_is_not_lost_when_the_last_read_sees_it_or_a_later_value() -> None:
    assert lost_writes([put("a", 0, 1), get("b", 2, 3), put("b", 4, 5), get("b", 6, 7)]) == []
    assert lost_writes([put("a", 0, 1), put("b", 2, 3), get("b", 4, 5)]) == []


def test_a_set_is_not_lost_while_the_value_read_may_have_been_written_after_it() -> None:
    concurrent = [put("a", 0, 3, process=2), put("b", 2, 4), get("a", 5, 6)]
    assert lost_writes(concurrent) == []
    unknown = [put("a", 0, 1, INFO, process=2), put("b", 2, 4), get("a", 5, 6)]
    assert lost_writes(unknown) == []
    touching = [put("a", 0, 2, process=2), put("b", 2, 4), get("a", 5, 6)]
    assert lost_writes(touching) == []


def test_a_read_of_a_value_never_written_proves_no_write_lost() -> None:
    # The checker reports that read; a FAIL SET is not a write.
    assert lost_writes([put("a", 0, 1, FAIL), put("b", 2, 3), get("a", 4, 5)]) == []


def test_a_set_still_running_at_the_last_read_is_not_lost() -> None:
    assert lost_writes([put("a", 0, 1), put("b", 2, 6), get("a", 4, 7)]) == []
    assert lost_writes([put("a", 0, 1), put("b", 2, 4), get("a", 4, 7)]) == []


def test_only_the_last_read_decides() -> None:
    # The stale read is a linearizability violation, not a lost write: the last read has b.
    ops = [put("a", 0, 1), put("b", 2, 3), get("a", 4, 5), get("b", 6, 7)]
    assert lost_writes(ops) == []
    assert lost_writes([*ops, get("a", 8, 9)]) == [ops[1]]
    # Last by invocation, not by completion.
    assert lost_writes([*ops, get("a", 8, 9), get("b", 7, 20)]) == [ops[1]]


# Simulated correct histories.


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(1, 600),
    keys=st.integers(1, 4),
    processes=st.integers(1, 8),
    latency=st.sampled_from([0.1, 1.0, 5.0]),
)
def test_simulated_histories_are_linearizable(
    seed: int, count: int, keys: int, processes: int, latency: float
) -> None:
    workload = Workload(ops=count, keys=keys, processes=processes, latency=latency)
    ops = simulate(workload, random.Random(seed))
    assert [v for v in check(ops) if v.status != "ok"] == []
    assert lost_writes(ops) == []


@settings(max_examples=100, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_the_search_accepts_simulated_histories(rng: random.Random) -> None:
    workload = Workload(ops=rng.randint(1, 60), keys=1, processes=rng.randint(2, 6))
    ops = simulate(workload, rng)
    assert check_search(ops).status == "ok"


def test_a_history_of_100_000_operations() -> None:
    workload = Workload(ops=100_000, keys=20, processes=8, set_info=0.12)
    ops = simulate(workload, random.Random(7))
    info_sets = sum(op.kind is Kind.SET and op.outcome is INFO for op in ops)
    assert info_sets >= 0.05 * len(ops)
    started = time.perf_counter()
    verdicts = check(ops)
    elapsed = time.perf_counter() - started
    print(f"\nchecked {len(ops):,} operations on {len(verdicts)} keys in {elapsed:.2f} s")
    assert [v.status for v in verdicts] == ["ok"] * 20


# The zone method against the search, and the search against enumeration.


def random_small_history(rng: random.Random, most: int = 8) -> list[Op]:
    """Up to ``most`` operations of 2 or 3 processes on one key, at small integer times so that
    intervals often touch. Most reads return NOT_FOUND or the value of a SET that was not
    refused and had begun; a few return any value: refused, later, or never written."""
    longest = rng.randint(1, 3)  # per history: short operations tie often, long ones nest
    shapes: list[tuple[int, int, int]] = []
    for process in range(rng.randint(2, 3)):
        start = rng.randint(0, 1)
        for _ in range(rng.randint(1, 4)):
            end = start + rng.randint(0, longest)
            shapes.append((process, start, end))
            start = end + rng.randint(0, 1)
    rng.shuffle(shapes)
    ops = [
        random_op(rng, process, n, start, end)
        for n, (process, start, end) in enumerate(shapes[:most])
    ]
    return [
        dataclasses.replace(op, value=random_read(rng, op, ops)) if op.kind is Kind.GET else op
        for op in ops
    ]


def random_op(rng: random.Random, process: int, n: int, start: int, end: int) -> Op:
    """A SET of its own value, or a GET whose value is chosen later; any outcome."""
    kind = rng.choice([Kind.SET, Kind.GET])
    weights = [6, 3, 2] if kind is Kind.SET else [10, 1, 1]
    outcome = rng.choices([OK, INFO, FAIL], weights)[0]
    value = f"v{n}" if kind is Kind.SET else None
    return Op(process, kind, "k", value, float(start), float(end), outcome)


def random_read(rng: random.Random, read: Op, ops: list[Op]) -> str | None:
    writes = [op for op in ops if op.kind is Kind.SET]
    if rng.random() < 0.1:
        return rng.choice([None, "never", *(op.value for op in writes)])
    begun = [op.value for op in writes if op.outcome is not FAIL and op.invoked <= read.completed]
    return rng.choice([None, *begun])


@settings(max_examples=500, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_zones_agree_with_the_search_on_small_histories(rng: random.Random) -> None:
    ops = random_small_history(rng)
    assert check_zones(ops).status == check_search(ops).status


def test_zones_agree_with_the_search_on_many_seeded_histories() -> None:
    # Also shows that the histories compared are a fair mix of verdicts and of reasons.
    tally: Counter[str] = Counter()
    for seed in range(3000):
        ops = random_small_history(random.Random(seed))
        zones, search = check_zones(ops), check_search(ops)
        assert zones.status == search.status, (seed, zones, ops)
        tally[zones.status] += 1
        tally.update(reason for reason in REASONS if zones.reason.startswith(reason))
    assert min(tally["ok"], tally["violation"]) > 600, tally
    assert min(tally[reason] for reason in REASONS) > 50, tally


@settings(max_examples=200, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_zones_agree_with_the_search_on_corrupted_simulations(rng: random.Random) -> None:
    """Longer histories of realistic shape, one read changed to another value of the key."""
    workload = Workload(ops=rng.randint(5, 40), keys=1, processes=rng.randint(2, 5))
    ops = simulate(workload, rng)
    reads = [n for n, op in enumerate(ops) if op.kind is Kind.GET and op.outcome is OK]
    values = [None, *(op.value for op in ops if op.kind is Kind.SET)]
    if reads:
        n = rng.choice(reads)
        ops[n] = dataclasses.replace(ops[n], value=rng.choice(values))
    assert check_zones(ops).status == check_search(ops).status


def linearizable_by_enumeration(ops: Sequence[Op]) -> bool:
    """The definition, literally: some choice of INFO SETs that took effect, and some order of
    them and the OK operations that respects real time, makes a valid register run."""
    required = [op for op in ops if op.outcome is OK]
    optional = [op for op in ops if op.kind is Kind.SET and op.outcome is INFO]
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations([*required, *chosen]):
                if respects_real_time(order) and register_run_is_valid(order):
                    return True
    return False


def respects_real_time(order: Sequence[Op]) -> bool:
    def done(op: Op) -> float:
        return float("inf") if op.outcome is INFO else op.completed

    return not any(done(b) < a.invoked for a, b in itertools.combinations(order, 2))


def register_run_is_valid(order: Sequence[Op]) -> bool:
    value = None
    for op in order:
        if op.kind is Kind.SET:
            value = op.value
        elif op.value != value:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_the_search_agrees_with_enumeration(rng: random.Random) -> None:
    ops = random_small_history(rng, most=6)
    expected = "ok" if linearizable_by_enumeration(ops) else "violation"
    assert check_search(ops).status == expected
