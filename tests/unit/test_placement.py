"""choose_holders and the leader's Index, driven the way Leader.set drives them."""

from __future__ import annotations

import pytest

from kayit.cluster.index import Entry, Index
from kayit.cluster.placement import choose_holders
from kayit.version import Version


def members(n: int) -> list[str]:
    return [f"127.0.0.1:{5556 + i}" for i in range(n)]


def place(
    index: Index, alive: list[str], tolerance: int, message_id: str, version: Version
) -> list[str]:
    """One SET as the leader does it: keep live holders, choose, reserve, commit."""
    entry = index.get(message_id)
    keep = [h for h in entry.holders if h in alive] if entry else []
    holders = choose_holders(index.load, alive, tolerance, keep)
    assert holders is not None
    assert len(holders) == tolerance
    assert len(set(holders)) == tolerance
    assert set(holders) <= set(alive)
    index.reserve(holders)
    assert index.commit(message_id, version, holders)
    return holders


def loads(index: Index, alive: list[str]) -> list[int]:
    return [index.load.get(address, 0) for address in alive]


def test_tolerance_2_four_members_1000_ids_gives_500_each() -> None:
    index = Index()
    alive = members(4)
    for i in range(1000):
        place(index, alive, 2, str(i), Version(1, i + 1))
    assert loads(index, alive) == [500, 500, 500, 500]
    assert len(index) == 1000


def test_tolerance_3_six_members_9000_ids_gives_4500_each() -> None:
    index = Index()
    alive = members(6)
    for i in range(9000):
        place(index, alive, 3, str(i), Version(1, i + 1))
    assert loads(index, alive) == [4500] * 6
    assert len(index) == 9000


@pytest.mark.parametrize("tolerance", range(1, 8))
@pytest.mark.parametrize("extra", [1, 2, 3])
def test_loads_stay_within_one(tolerance: int, extra: int) -> None:
    index = Index()
    alive = members(tolerance + extra)
    rounds = 7
    for i in range(rounds * len(alive)):
        place(index, alive, tolerance, f"m{i}", Version(1, i + 1))
        current = loads(index, alive)
        assert max(current) - min(current) <= 1, (i, current)
    assert loads(index, alive) == [rounds * tolerance] * len(alive)


def test_equal_loads_fill_in_candidate_order() -> None:
    alive = ["a", "b", "c", "d"]
    assert choose_holders({}, alive, 2) == ["a", "b"]
    assert choose_holders({"a": 1, "b": 1}, alive, 2) == ["c", "d"]
    assert choose_holders({"a": 1, "b": 1, "c": 1, "d": 1}, alive, 2) == ["a", "b"]


def test_least_loaded_first() -> None:
    load = {"a": 5, "b": 1, "c": 3, "d": 0}
    assert choose_holders(load, ["a", "b", "c", "d"], 3) == ["d", "b", "c"]


def test_unknown_member_counts_as_load_zero() -> None:
    assert choose_holders({"a": 2, "b": 1}, ["a", "b", "new"], 1) == ["new"]


def test_keep_is_honoured_even_when_most_loaded() -> None:
    load = {"a": 0, "b": 0, "c": 9, "d": 9}
    assert choose_holders(load, ["a", "b", "c", "d"], 2, keep=["c", "d"]) == ["c", "d"]
    assert choose_holders(load, ["a", "b", "c", "d"], 2, keep=["d"]) == ["d", "a"]


def test_keep_longer_than_count_is_cut() -> None:
    assert choose_holders({}, ["a", "b", "c"], 2, keep=["c", "b", "a"]) == ["c", "b"]


def test_keep_is_not_chosen_twice() -> None:
    holders = choose_holders({"a": 0}, ["a", "b", "c"], 3, keep=["a"])
    assert holders == ["a", "b", "c"]


def test_none_when_too_few_candidates() -> None:
    assert choose_holders({}, ["a"], 2) is None
    assert choose_holders({}, [], 1) is None
    assert choose_holders({}, ["a", "b"], 3, keep=["a"]) is None


def test_exactly_enough_candidates() -> None:
    assert choose_holders({"a": 3, "b": 1}, ["a", "b"], 2) == ["b", "a"]


def test_tolerance_zero_chooses_nobody() -> None:
    assert choose_holders({}, [], 0) == []


def test_overwrite_keeps_holders_and_leaves_load_unchanged() -> None:
    index = Index()
    alive = members(4)
    for i in range(10):
        place(index, alive, 2, str(i), Version(1, i + 1))
    before_entry = index.get("3")
    assert before_entry is not None
    before_load = loads(index, alive)
    holders = place(index, alive, 2, "3", Version(1, 100))
    assert tuple(holders) == before_entry.holders
    assert index.get("3") == Entry(Version(1, 100), before_entry.holders)
    assert loads(index, alive) == before_load
    assert len(index) == 10


def test_overwrite_replaces_a_dead_holder_and_moves_its_load() -> None:
    index = Index()
    a, b, c, d = members(4)
    place(index, [a, b, c, d], 2, "x", Version(1, 1))
    assert index.get("x") == Entry(Version(1, 1), (a, b))
    holders = place(index, [b, c, d], 2, "x", Version(1, 2))  # a died
    assert holders == [b, c]
    assert loads(index, [a, b, c, d]) == [0, 1, 1, 0]


def test_commit_rejects_an_older_version_and_releases_its_reservation() -> None:
    index = Index()
    index.reserve(["a", "b"])
    assert index.commit("x", Version(2, 1), ["a", "b"])
    index.reserve(["c", "d"])
    assert dict(index.load) == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert not index.commit("x", Version(1, 9), ["c", "d"])
    assert index.get("x") == Entry(Version(2, 1), ("a", "b"))
    assert [index.load.get(m, 0) for m in "abcd"] == [1, 1, 0, 0]


def test_commit_of_equal_version_is_accepted() -> None:
    index = Index()
    index.reserve(["a"])
    assert index.commit("x", Version(1, 1), ["a"])
    index.reserve(["b"])
    assert index.commit("x", Version(1, 1), ["b"])
    assert index.get("x") == Entry(Version(1, 1), ("b",))
    assert [index.load.get(m, 0) for m in "ab"] == [0, 1]


def test_commit_of_newer_version_releases_the_old_holders() -> None:
    index = Index()
    index.reserve(["a", "b"])
    index.commit("x", Version(1, 1), ["a", "b"])
    index.reserve(["b", "c"])
    assert index.commit("x", Version(1, 2), ("b", "c"))
    assert index.get("x") == Entry(Version(1, 2), ("b", "c"))
    assert [index.load.get(m, 0) for m in "abc"] == [0, 1, 1]


def test_release_undoes_reserve() -> None:
    index = Index()
    index.reserve(["a", "b", "a"])
    assert index.load.get("a") == 2
    index.release(["a", "b", "a"])
    assert [index.load.get(m, 0) for m in "ab"] == [0, 0]
    assert len(index) == 0
    assert index.get("nothing") is None


def test_newer_term_beats_higher_seq() -> None:
    index = Index()
    index.reserve(["a"])
    assert index.commit("x", Version(2, 1), ["a"])
    index.reserve(["b"])
    assert not index.commit("x", Version(1, 1000), ["b"])
    entry = index.get("x")
    assert entry is not None
    assert entry.version == Version(2, 1)


def test_in_flight_reservations_spread_concurrent_sets() -> None:
    index = Index()
    alive = members(4)
    first = choose_holders(index.load, alive, 2)
    assert first is not None
    index.reserve(first)
    second = choose_holders(index.load, alive, 2)  # chosen before the first commits
    assert second is not None
    assert set(first).isdisjoint(second)
