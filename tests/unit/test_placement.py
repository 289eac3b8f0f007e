"""choose_holders alone, and driven the way Leader.set drives it: with the committed load of
ClusterMetadata, TOLERANCE + 1 holders, the leader kept first."""

from __future__ import annotations

import pytest

from kayit.cluster.placement import choose_holders
from kayit.metadata import ClusterMetadata, Formed, IndexEntry, NodeAdded, Placed, PlacedItem
from kayit.version import Version


class Cluster:
    """Committed metadata of a formed cluster of nodes n1..n<size>, and SETs placed in it."""

    def __init__(self, tolerance: int, size: int) -> None:
        self.metadata = ClusterMetadata()
        self.nodes = [f"n{i}" for i in range(1, size + 1)]
        self._seq = 0
        assert self._apply(Formed("c1", tolerance)) == (True,)
        for node_id in self.nodes:
            assert self._apply(NodeAdded(node_id, f"10.0.0.{node_id[1:]}:5555")) == (True,)

    def set(
        self, message_id: str, leader: str = "n1", dead: frozenset[str] = frozenset()
    ) -> list[str]:
        """One SET as the leader does it: keep itself and the live current holders, choose by
        committed load, commit the Placed entry. Returns the holders chosen."""
        alive = [leader, *(n for n in self.nodes if n != leader and n not in dead)]
        entry = self.metadata.entry(message_id)
        current = entry.holders if entry else ()
        keep = [leader, *(h for h in current if h in alive and h != leader)]
        wanted = self.metadata.tolerance + 1
        holders = choose_holders(self.metadata.load(), alive, wanted, keep)
        assert holders is not None
        assert holders[0] == leader
        assert len(set(holders)) == wanted
        self._seq += 1
        item = PlacedItem(message_id, Version(1, self._seq), 7, tuple(holders))
        assert self._apply(Placed((item,))) == (True,)
        return holders

    def loads(self, nodes: list[str]) -> list[int]:
        load = self.metadata.load()
        return [load[node_id] for node_id in nodes]

    def _apply(self, command: Formed | NodeAdded | Placed) -> tuple[bool, ...]:
        return self.metadata.apply(command, 1, self.metadata.applied_index + 1)


def test_tolerance_2_leader_and_four_others_1000_ids_gives_500_to_each_other() -> None:
    cluster = Cluster(tolerance=2, size=5)
    for i in range(1000):
        cluster.set(str(i))
    assert cluster.loads(cluster.nodes) == [1000, 500, 500, 500, 500]
    assert cluster.metadata.message_count == 1000


def test_tolerance_3_leader_and_six_others_9000_ids_gives_4500_to_each_other() -> None:
    cluster = Cluster(tolerance=3, size=7)
    for i in range(9000):
        cluster.set(str(i))
    assert cluster.loads(cluster.nodes) == [9000] + [4500] * 6
    assert cluster.metadata.message_count == 9000


@pytest.mark.parametrize("tolerance", range(1, 8))
@pytest.mark.parametrize("extra", [1, 2, 3])
def test_loads_of_the_others_stay_within_one(tolerance: int, extra: int) -> None:
    cluster = Cluster(tolerance, size=1 + tolerance + extra)
    others = cluster.nodes[1:]
    rounds = 7
    for i in range(rounds * len(others)):
        cluster.set(f"m{i}")
        current = cluster.loads(others)
        assert max(current) - min(current) <= 1, (i, current)
    assert cluster.loads(others) == [rounds * tolerance] * len(others)
    assert cluster.loads(["n1"]) == [rounds * len(others)]


def test_overwrite_keeps_holders_and_leaves_load_unchanged() -> None:
    cluster = Cluster(tolerance=1, size=4)
    for i in range(10):
        cluster.set(str(i))
    before = cluster.metadata.entry("3")
    assert before is not None
    before_load = cluster.loads(cluster.nodes)
    holders = cluster.set("3")
    assert tuple(sorted(holders)) == before.holders
    assert cluster.metadata.entry("3") == IndexEntry(Version(1, 11), 7, before.holders)
    assert cluster.loads(cluster.nodes) == before_load
    assert cluster.metadata.message_count == 10


def test_overwrite_replaces_a_dead_holder_and_moves_its_load() -> None:
    cluster = Cluster(tolerance=2, size=5)
    assert cluster.set("x") == ["n1", "n2", "n3"]
    assert cluster.set("x", dead=frozenset({"n2"})) == ["n1", "n3", "n4"]
    assert cluster.metadata.entry("x") == IndexEntry(Version(1, 2), 7, ("n1", "n3", "n4"))
    assert cluster.loads(cluster.nodes) == [1, 0, 1, 1, 0]


def test_a_new_leader_puts_itself_first_and_keeps_the_live_holders() -> None:
    cluster = Cluster(tolerance=2, size=5)
    assert cluster.set("x") == ["n1", "n2", "n3"]
    # n1 died and n4 leads: it holds every copy it writes, and n2, n3 keep theirs.
    assert cluster.set("x", leader="n4", dead=frozenset({"n1"})) == ["n4", "n2", "n3"]
    assert cluster.loads(cluster.nodes) == [0, 1, 1, 1, 0]


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
