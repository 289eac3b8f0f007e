"""Membership with a fake clock: liveness by heartbeat, failure marks, change reports."""

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


def test_unknown_member_is_not_alive() -> None:
    membership, _ = make()
    assert not membership.is_known("a")
    assert not membership.is_alive("a")
    assert membership.alive() == []
    assert membership.view() == []


def test_heard_from_tells_new_live_and_revived_members_apart() -> None:
    membership, clock = make(dead_after=3.0)
    assert membership.heard_from("a", 0) is Arrival.NEW
    assert membership.heard_from("a", 0) is Arrival.LIVE
    assert membership.heard_from("b", 0) is Arrival.NEW
    assert membership.is_known("a")
    clock.now += 2.9
    assert membership.heard_from("a", 0) is Arrival.LIVE
    clock.now += 3.1  # silent past dead_after
    assert membership.heard_from("a", 0) is Arrival.REVIVED
    assert membership.heard_from("a", 0) is Arrival.LIVE
    membership.mark_failed("b")
    assert membership.heard_from("b", 0) is Arrival.REVIVED
    assert membership.heard_from("b", 0) is Arrival.LIVE


def test_alive_after_heard_from() -> None:
    membership, _ = make()
    membership.heard_from("a", 5)
    assert membership.is_alive("a")
    assert membership.alive() == ["a"]
    assert membership.view() == [MemberView("a", True, 5)]


def test_dead_after_dead_after_seconds_of_silence() -> None:
    membership, clock = make(dead_after=3.0)
    membership.heard_from("a", 0)
    clock.now += 2.9
    assert membership.is_alive("a")
    clock.now += 0.2  # 3.1 s of silence
    assert not membership.is_alive("a")
    assert membership.alive() == []
    assert membership.view() == [MemberView("a", False, 0)]
    assert membership.is_known("a")


def test_heartbeat_resets_the_silence() -> None:
    membership, clock = make(dead_after=3.0)
    membership.heard_from("a", 0)
    for _ in range(10):
        clock.now += 2.0
        membership.heard_from("a", 0)
        assert membership.is_alive("a")
    clock.now += 3.5
    assert not membership.is_alive("a")


def test_dead_member_comes_back_when_heard_from() -> None:
    membership, clock = make(dead_after=1.0)
    membership.heard_from("a", 1)
    clock.now += 5
    assert not membership.is_alive("a")
    assert membership.heard_from("a", 2) is Arrival.REVIVED
    assert membership.is_alive("a")
    assert membership.view() == [MemberView("a", True, 2)]


def test_mark_failed_makes_it_dead_until_heard_from_again() -> None:
    membership, clock = make(dead_after=10.0)
    membership.heard_from("a", 0)
    membership.heard_from("b", 0)
    membership.mark_failed("a")
    assert not membership.is_alive("a")
    assert membership.alive() == ["b"]
    clock.now += 1  # time alone does not bring it back
    assert not membership.is_alive("a")
    membership.heard_from("a", 0)
    assert membership.is_alive("a")
    assert membership.alive() == ["a", "b"]


def test_mark_failed_on_unknown_member_is_ignored() -> None:
    membership, _ = make()
    membership.mark_failed("ghost")
    assert not membership.is_known("ghost")
    assert membership.view() == []


def test_alive_keeps_join_order() -> None:
    membership, clock = make(dead_after=3.0)
    for address in ["c", "a", "d", "b"]:
        membership.heard_from(address, 0)
        clock.now += 0.5
    for address in ["b", "a", "d", "c"]:  # heartbeats in another order
        membership.heard_from(address, 0)
    assert membership.alive() == ["c", "a", "d", "b"]
    membership.mark_failed("a")
    assert membership.alive() == ["c", "d", "b"]
    membership.heard_from("a", 0)
    assert membership.alive() == ["c", "a", "d", "b"]
    assert [view.address for view in membership.view()] == ["c", "a", "d", "b"]


def test_stored_count_follows_the_latest_heartbeat() -> None:
    membership, _ = make()
    membership.heard_from("a", 1)
    membership.heard_from("a", 42)
    assert membership.view() == [MemberView("a", True, 42)]


def test_changes_ignores_first_sighting() -> None:
    membership, _ = make()
    membership.heard_from("a", 0)
    membership.heard_from("b", 0)
    assert membership.changes() == []
    assert membership.changes() == []


def test_changes_reports_each_transition_once() -> None:
    membership, clock = make(dead_after=3.0)
    membership.heard_from("a", 0)
    membership.heard_from("b", 0)
    assert membership.changes() == []
    clock.now += 2
    membership.heard_from("b", 7)
    clock.now += 2  # a silent for 4 s, b for 2 s
    assert membership.changes() == [MemberView("a", False, 0)]
    assert membership.changes() == []
    membership.heard_from("a", 3)
    assert membership.changes() == [MemberView("a", True, 3)]
    assert membership.changes() == []


def test_changes_reports_failure_and_recovery() -> None:
    membership, _ = make()
    membership.heard_from("a", 0)
    membership.heard_from("b", 0)
    membership.changes()
    membership.mark_failed("b")
    assert membership.changes() == [MemberView("b", False, 0)]
    membership.mark_failed("b")
    assert membership.changes() == []
    membership.heard_from("b", 0)
    assert membership.changes() == [MemberView("b", True, 0)]


def test_changes_misses_a_flap_between_calls() -> None:
    membership, _ = make()
    membership.heard_from("a", 0)
    membership.changes()
    membership.mark_failed("a")
    membership.heard_from("a", 0)
    assert membership.changes() == []  # alive at both calls: no change to report


def test_changes_in_join_order() -> None:
    membership, clock = make(dead_after=1.0)
    for address in ["z", "y", "x"]:
        membership.heard_from(address, 0)
    membership.changes()
    clock.now += 2
    assert [view.address for view in membership.changes()] == ["z", "y", "x"]


def test_silence_counts_only_time_in_which_the_leaders_loop_ran() -> None:
    """A leader stopped for 10 s hears nothing meanwhile: its members must not look silent
    for those 10 s when it resumes, only for the loop clock's cap."""
    source = FakeClock()
    clock = LoopClock(period=0.1, source=source)
    membership = Membership(dead_after=1.0, clock=clock)
    membership.heard_from("a", 0)
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
