"""The deletion rule: a node deletes a copy only when committed metadata says it may.

A copy goes when the index has a newer version of its id, or the same version on other nodes,
or its id was deleted at a newer version (its tombstone is kept);
or when its version was never committed and a leader of a later term has committed since.
Never because an index lacks an entry: a fresh or lagging replica deletes nothing it should not.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kayit.metadata import (
    ClusterMetadata,
    Command,
    Deleted,
    DeletedItem,
    Formed,
    NodeAdded,
    NodeRemoved,
    Placed,
    PlacedItem,
    Released,
    Tombstone,
)
from kayit.version import UNKNOWN, Version

NODES = ["n1", "n2", "n3", "n4"]


class Log:
    def __init__(self) -> None:
        self.metadata = ClusterMetadata()
        self(Formed("c1", 1))
        for node_id in NODES:
            self(NodeAdded(node_id, f"h:{node_id}"))

    def __call__(self, command: Command | None, term: int = 1) -> None:
        self.metadata.apply(command, term, self.metadata.applied_index + 1)


def place(message_id: str, version: Version, *holders: str) -> Placed:
    return Placed((PlacedItem(message_id, version, 7, holders),))


def test_the_current_version_on_a_holder_stays() -> None:
    log = Log()
    log(place("m", Version(1, 1), "n1", "n2"), term=1)
    log(None, term=5)
    assert log.metadata.copies_to_delete("n1", [("m", Version(1, 1))]) == []


def test_an_overwritten_copy_goes() -> None:
    log = Log()
    log(place("m", Version(1, 1), "n1", "n2"))
    log(place("m", Version(1, 2), "n1", "n2"))
    assert log.metadata.copies_to_delete("n1", [("m", Version(1, 1))]) == [("m", Version(1, 1))]


def test_a_copy_moved_off_the_node_goes_and_stays_where_it_went() -> None:
    log = Log()
    log(place("m", Version(1, 1), "n1", "n2"))
    log(place("m", Version(1, 1), "n2", "n3"))
    assert log.metadata.copies_to_delete("n1", [("m", Version(1, 1))]) == [("m", Version(1, 1))]
    assert log.metadata.copies_to_delete("n3", [("m", Version(1, 1))]) == []


def test_a_deleted_ids_copies_go_and_its_tombstone_stays_until_each_holder_lets_go() -> None:
    log = Log()
    log(place("m", Version(1, 1), "n1", "n2"))
    log(Deleted((DeletedItem("m", Version(1, 2)),)))
    assert log.metadata.entry("m") is None
    assert log.metadata.tombstone("m") == Tombstone(Version(1, 2), ("n1", "n2"))
    for node_id in ("n1", "n2"):
        assert log.metadata.copies_to_delete(node_id, [("m", Version(1, 1))]) == [
            ("m", Version(1, 1))
        ]
    # A pending copy of a SET older than the delete, on a node of the current term, goes too.
    assert log.metadata.copies_to_delete("n3", [("m", Version(1, 2))]) == [("m", Version(1, 2))]
    log(place("m", Version(1, 1), "n3"))  # an older SET committed late: no effect
    assert log.metadata.entry("m") is None
    log(Released("n1", (("m", Version(1, 2)),)))
    assert log.metadata.tombstones_on("n1") == [] and log.metadata.tombstone_count == 1
    log(NodeRemoved("n2"))  # a removed node holds nothing: its part of the tombstone goes
    assert log.metadata.tombstone_count == 0


def test_a_set_newer_than_the_delete_takes_the_place_of_its_tombstone() -> None:
    log = Log()
    log(place("m", Version(1, 1), "n1", "n2"))
    log(Deleted((DeletedItem("m", Version(1, 2)),)))
    log(place("m", Version(1, 3), "n3", "n4"))
    assert log.metadata.tombstone_count == 0
    entry = log.metadata.entry("m")
    assert entry is not None and entry.version == Version(1, 3)
    assert log.metadata.copies_to_delete("n1", [("m", Version(1, 1))]) == [("m", Version(1, 1))]


def test_an_unknown_copy_of_the_current_term_may_be_a_set_under_way_and_stays() -> None:
    log = Log()
    log(None, term=3)  # the leader of term 3 committed its no-op
    copies = [("new", Version(3, 1)), ("m", Version(3, 2))]
    log(place("m", Version(2, 9), "n1"), term=3)  # m is indexed older than the copy
    assert log.metadata.copies_to_delete("n1", copies) == []
    # Copies of a later term than any committed: a leader this replica has not heard of.
    assert log.metadata.copies_to_delete("n1", [("new", Version(4, 1))]) == []


def test_an_unknown_copy_goes_once_a_leader_of_a_later_term_has_committed() -> None:
    log = Log()
    log(None, term=3)
    log(place("m", Version(2, 9), "n1"), term=3)
    copies = [("new", Version(3, 1)), ("m", Version(3, 2))]
    log(None, term=4)  # term 3's entries that are not in the log never will be
    assert log.metadata.copies_to_delete("n1", copies) == copies


def test_a_copy_of_unrecorded_version_is_kept() -> None:
    log = Log()
    log(place("m", Version(1, 2), "n2"))
    log(None, term=9)
    assert log.metadata.copies_to_delete("n1", [("m", UNKNOWN), ("x", UNKNOWN)]) == []


inventories = st.lists(
    st.tuples(
        st.sampled_from(["m1", "m2", "m3", "m4", "m5"]),
        st.builds(Version, st.integers(0, 4), st.integers(0, 3)),
    ),
    max_size=20,
)
placements = st.lists(
    st.tuples(
        st.builds(
            PlacedItem,
            st.sampled_from(["m1", "m2", "m3", "m4"]),
            st.builds(Version, st.integers(1, 4), st.integers(0, 3)),
            st.just(7),
            st.lists(st.sampled_from(NODES), max_size=3).map(tuple),
        ),
        st.integers(0, 1),  # whether the Raft term goes up before it
    ),
    max_size=25,
)


def build(placed: list[tuple[PlacedItem, int]]) -> ClusterMetadata:
    log = Log()
    term = 1
    for item, step in placed:
        term += step
        log(Placed((item,)), term=term)
    return log.metadata


@settings(max_examples=400)
@given(placements, inventories, st.sampled_from(NODES))
def test_never_the_indexed_version_on_a_holder_and_exactly_what_the_rule_allows(
    placed: list[tuple[PlacedItem, int]], inventory: list[tuple[str, Version]], node_id: str
) -> None:
    metadata = build(placed)
    doomed = metadata.copies_to_delete(node_id, inventory)
    for message_id, version in doomed:
        entry = metadata.entry(message_id)
        assert not (entry and entry.version == version and node_id in entry.holders)
    expected = []
    for message_id, version in inventory:
        entry = metadata.entry(message_id)
        overwritten = entry is not None and entry.version > version
        moved = entry is not None and entry.version == version and node_id not in entry.holders
        never_committed = entry is None or entry.version < version
        abandoned = never_committed and version.term < metadata.last_leader_term
        if version != UNKNOWN and (overwritten or moved or abandoned):
            expected.append((message_id, version))
    assert doomed == expected


@given(inventories, st.sampled_from(NODES))
def test_a_replica_that_knows_nothing_deletes_nothing(
    inventory: list[tuple[str, Version]], node_id: str
) -> None:
    assert ClusterMetadata().copies_to_delete(node_id, inventory) == []
    # Formed in term 1 and an empty index: only copies of an earlier term can be abandoned
    # (and not those whose version was never recorded).
    doomed = Log().metadata.copies_to_delete(node_id, inventory)
    earlier = [(key, v) for key, v in inventory if v.term == 0 and v != UNKNOWN]
    assert doomed == earlier


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["m1", "m2", "m3"]),
            st.lists(st.sampled_from(NODES), min_size=1, max_size=3).map(tuple),
            st.integers(0, 1),
        ),
        max_size=25,
    ),
    st.data(),
)
def test_a_lagging_replica_never_deletes_a_copy_a_later_set_committed(
    sets: list[tuple[str, tuple[str, ...], int]], data: st.DataObject
) -> None:
    """SETs as leaders write them: version (term, seq) committed in an entry of that term.
    A replica that applied only a prefix of the log judges the copies the whole log placed;
    none of the copies current at the end may be deleted."""
    whole, lagging = Log(), Log()
    cut = data.draw(st.integers(0, len(sets)))
    term, seq = 1, 0
    for position, (message_id, holders, step) in enumerate(sets):
        term, seq = term + step, 0 if step else seq + 1
        command = place(message_id, Version(term, seq), *holders)
        whole(command, term=term)
        if position < cut:
            lagging(command, term=term)
    for node_id in NODES:
        held = whole.metadata.holders_on(node_id)
        current = []
        for message_id in held:
            entry = whole.metadata.entry(message_id)
            assert entry is not None
            current.append((message_id, entry.version))
        assert lagging.metadata.copies_to_delete(node_id, current) == []
        assert whole.metadata.copies_to_delete(node_id, current) == []
