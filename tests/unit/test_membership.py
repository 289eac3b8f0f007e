"""Membership with a fake clock: liveness by messages heard, failure marks, change reports."""

from __future__ import annotations

import pytest

from kayit.cluster.loop_clock import LoopClock
from kayit.cluster.membership import Arrival, Membership, MemberView


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(dead_after: float = 3.0) -> tuple[Membership, FakeClock]:
    clock = FakeClock()
    return Membership(dead_after, clock=clock), clock


def test_unknown_node_is_not_alive() -> None:
    membership, _ = make()
    assert not membership.is_alive("a")
    assert membership.alive() == []
    assert membership.view() == []


def test_heard_from_tells_new_live_and_revived_nodes_apart() -> None:
    membership, clock = make(dead_after=3.0)
    assert membership.heard_from("a") is Arrival.NEW
    assert membership.heard_from("a") is Arrival.LIVE
    assert membership.heard_from("b") is Arrival.NEW
    clock.now += 2.9
    assert membership.heard_from("a") is Arrival.LIVE
    clock.now += 3.1  # silent past dead_after
    assert membership.heard_from("a") is Arrival.REVIVED
    assert membership.heard_from("a") is Arrival.LIVE
    membership.mark_failed("b")
    assert membership.heard_from("b") is Arrival.REVIVED
    assert membership.heard_from("b") is Arrival.LIVE


def test_alive_after_heard_from() -> None:
    membership, _ = make()
    membership.heard_from("a")
    assert membership.is_alive("a")
    assert membership.alive() == ["a"]
    assert membership.view() == [MemberView("a", True)]


def test_dead_after_dead_after_seconds_of_silence() -> None:
    membership, clock = make(dead_after=3.0)
    membership.heard_from("a")
    clock.now += 2.9
    assert membership.is_alive("a")
    clock.now += 0.2  # 3.1 s of silence
    assert not membership.is_alive("a")
    assert membership.alive() == []
    assert membership.view() == [MemberView("a", False)]  # dead, yet still known


def test_hearing_from_a_node_resets_its_silence() -> None:
    membership, clock = make(dead_after=3.0)
    membership.heard_from("a")
    for _ in range(10):
        clock.now += 2.0
        membership.heard_from("a")
        assert membership.is_alive("a")
    clock.now += 3.5
    assert not membership.is_alive("a")


def test_dead_node_comes_back_when_heard_from() -> None:
    membership, clock = make(dead_after=1.0)
    membership.heard_from("a")
    clock.now += 5
    assert not membership.is_alive("a")
    assert membership.heard_from("a") is Arrival.REVIVED
    assert membership.is_alive("a")
    assert membership.view() == [MemberView("a", True)]


def test_mark_failed_makes_it_dead_until_heard_from_again() -> None:
    membership, clock = make(dead_after=10.0)
    membership.heard_from("a")
    membership.heard_from("b")
    membership.mark_failed("a")
    assert not membership.is_alive("a")
    assert membership.alive() == ["b"]
    clock.now += 1  # time alone does not bring it back
    assert not membership.is_alive("a")
    membership.heard_from("a")
    assert membership.is_alive("a")
    assert membership.alive() == ["a", "b"]


def test_mark_failed_on_unknown_node_is_ignored() -> None:
    membership, _ = make()
    membership.mark_failed("ghost")
    assert not membership.is_alive("ghost")
    assert membership.view() == []


def test_alive_keeps_the_order_first_heard() -> None:
    membership, clock = make(dead_after=3.0)
    for node_id in ["c", "a", "d", "b"]:
        membership.heard_from(node_id)
        clock.now += 0.5
    for node_id in ["b", "a", "d", "c"]:  # heard again in another order
        membership.heard_from(node_id)
    assert membership.alive() == ["c", "a", "d", "b"]
    membership.mark_failed("a")
    assert membership.alive() == ["c", "d", "b"]
    membership.heard_from("a")
    assert membership.alive() == ["c", "a", "d", "b"]
    assert [view.node_id for view in membership.view()] == ["c", "a", "d", "b"]


def test_expected_node_is_alive_for_dead_after_then_dead_unless_heard_from() -> None:
    membership, clock = make(dead_after=3.0)
    membership.expect("a")
    membership.expect("b")
    assert membership.alive() == ["a", "b"]
    assert membership.silent_for("a") == 0.0
    clock.now += 2.9
    assert membership.is_alive("a")
    assert membership.heard_from("b") is Arrival.LIVE  # already known: not new
    clock.now += 0.2  # a silent 3.1 s since expected, b 0.2 s since heard
    assert not membership.is_alive("a")
    assert membership.alive() == ["b"]
    assert membership.heard_from("a") is Arrival.REVIVED


def test_expect_on_a_known_node_changes_nothing() -> None:
    membership, clock = make(dead_after=3.0)
    membership.heard_from("a")
    membership.heard_from("b")
    clock.now += 2.0
    membership.expect("a")  # does not reset a's silence
    assert membership.silent_for("a") == 2.0
    clock.now += 1.5
    assert not membership.is_alive("a")
    membership.mark_failed("b")
    membership.expect("b")  # does not clear a failure either
    assert not membership.is_alive("b")
    assert [view.node_id for view in membership.view()] == ["a", "b"]


def test_changes_ignores_first_sighting() -> None:
    membership, _ = make()
    membership.heard_from("a")
    membership.heard_from("b")
    assert membership.changes() == []
    assert membership.changes() == []


def test_changes_reports_each_transition_once() -> None:
    membership, clock = make(dead_after=3.0)
    membership.heard_from("a")
    membership.heard_from("b")
    assert membership.changes() == []
    clock.now += 2
    membership.heard_from("b")
    clock.now += 2  # a silent for 4 s, b for 2 s
    assert membership.changes() == [MemberView("a", False)]
    assert membership.changes() == []
    membership.heard_from("a")
    assert membership.changes() == [MemberView("a", True)]
    assert membership.changes() == []


def test_changes_reports_failure_and_recovery() -> None:
    membership, _ = make()
    membership.heard_from("a")
    membership.heard_from("b")
    membership.changes()
    membership.mark_failed("b")
    assert membership.changes() == [MemberView("b", False)]
    membership.mark_failed("b")
    assert membership.changes() == []
    membership.heard_from("b")
    assert membership.changes() == [MemberView("b", True)]


def test_changes_misses_a_flap_between_calls() -> None:
    membership, _ = make()
    membership.heard_from("a")
    membership.changes()
    membership.mark_failed("a")
    membership.heard_from("a")
    assert membership.changes() == []  # alive at both calls: no change to report


def test_changes_in_the_order_first_heard() -> None:
    membership, clock = make(dead_after=1.0)
    for node_id in ["z", "y", "x"]:
        membership.heard_from(node_id)
    membership.changes()
    clock.now += 2
    assert [view.node_id for view in membership.changes()] == ["z", "y", "x"]


def test_silence_counts_only_time_in_which_the_leaders_loop_ran() -> None:
    """A leader stopped for 10 s hears nothing meanwhile: the others must not look silent
    for those 10 s when it resumes, only for the loop clock's cap."""
    source = FakeClock()
    clock = LoopClock(period=0.1, source=source)
    membership = Membership(dead_after=1.0, clock=clock)
    membership.heard_from("a")
    for _ in range(5):
        source.now += 0.1
        clock.tick()
    source.now += 10  # stopped: no ticks
    assert membership.is_alive("a")
    assert membership.silent_for("a") == pytest.approx(0.5 + 0.3)
    for _ in range(3):  # running again, and still nothing heard: it is judged again
        source.now += 0.1
        clock.tick()
    assert not membership.is_alive("a")
