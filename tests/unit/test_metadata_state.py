"""ClusterMetadata: applying the committed log, checked case by case and against a plain model."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kayit.consensus.messages import Entry, EntryKind
from kayit.metadata import (
    AddressChanged,
    ClusterMetadata,
    Command,
    Deleted,
    DeletedItem,
    Formed,
    IndexEntry,
    NodeAdded,
    NodeRemoved,
    Placed,
    PlacedItem,
    Released,
    restore,
    snapshot,
)
from kayit.version import Version


class Log:
    """Feeds a ClusterMetadata committed entries with consecutive indexes."""

    def __init__(self, metadata: ClusterMetadata | None = None) -> None:
        self.metadata = metadata or ClusterMetadata()

    def __call__(self, command: Command | None, term: int = 1) -> tuple[bool, ...]:
        return self.metadata.apply(command, term, self.metadata.applied_index + 1)


def cluster(tolerance: int = 1, nodes: int = 4) -> Log:
    log = Log()
    assert log(Formed("c1", tolerance)) == (True,)
    for i in range(1, nodes + 1):
        assert log(NodeAdded(f"n{i}", f"10.0.0.{i}:5555")) == (True,)
    return log


def place(message_id: str, version: Version, *holders: str, checksum: int = 7) -> Placed:
    return Placed((PlacedItem(message_id, version, checksum, holders),))


def test_formed_sets_the_cluster_and_its_tolerance_once() -> None:
    log = Log()
    assert not log.metadata.formed
    assert log(Formed("c1", 2)) == (True,)
    assert log(Formed("c2", 3)) == (False,)
    assert (log.metadata.cluster_id, log.metadata.tolerance) == ("c1", 2)


def test_nothing_but_formed_applies_before_the_cluster_is_formed() -> None:
    log = Log()
    assert log(NodeAdded("n1", "a:1")) == (False,)
    assert log(place("m", Version(1, 1), "n1")) == (False,)
    assert log(Formed("", 1)) == (False,)  # a cluster needs an id
    assert log.metadata.nodes == {}
    assert log.metadata.entry("m") is None


def test_entries_must_come_in_order_and_those_without_a_command_may_be_skipped() -> None:
    metadata = ClusterMetadata()
    metadata.apply(None, 2, 1)
    with pytest.raises(ValueError):
        metadata.apply(None, 2, 1)  # again
    with pytest.raises(ValueError):
        metadata.apply(None, 1, 2)  # an older term
    assert (metadata.applied_index, metadata.last_leader_term) == (1, 2)
    assert metadata.apply(Formed("c", 1), 3, 4) == (True,)  # entries 2 and 3 had no command
    with pytest.raises(ValueError):
        metadata.apply(None, 3, 3)
    assert (metadata.applied_index, metadata.last_leader_term) == (4, 3)


def test_a_no_op_entry_advances_the_term_and_a_command_entry_is_decoded() -> None:
    metadata = ClusterMetadata()
    assert metadata.apply_entry(Entry(1, 4, kind=EntryKind.NO_OP)).flags == ()
    assert metadata.last_leader_term == 4
    assert metadata.apply_entry(Entry(2, 4, Formed("c", 1).encode())).flags == (True,)
    assert metadata.formed
    with pytest.raises(ValueError):
        metadata.apply_entry(Entry(3, 4, b"\xff"))
    # Entries of other kinds (a voter configuration, say) carry no metadata command.
    other_kinds = [kind for kind in EntryKind if kind is not EntryKind.COMMAND]
    for index, kind in enumerate(other_kinds, start=4):
        assert metadata.apply_entry(Entry(index, 5, b"\xff", kind)).flags == ()
    assert (metadata.applied_index, metadata.last_leader_term) == (3 + len(other_kinds), 5)


def test_node_ids_and_addresses_are_unique_and_a_removed_id_never_returns() -> None:
    log = cluster(nodes=2)
    assert log(NodeAdded("n1", "10.0.0.9:5555")) == (False,)  # id taken
    assert log(NodeAdded("n3", "10.0.0.1:5555")) == (False,)  # n1's address
    assert log(AddressChanged("n2", "10.0.0.1:5555")) == (False,)
    assert log(AddressChanged("n9", "10.0.0.9:5555")) == (False,)  # not a member
    assert log(AddressChanged("n2", "10.0.0.2:6000")) == (True,)
    assert log(NodeRemoved("n1")) == (True,)
    assert log(NodeRemoved("n1")) == (False,)
    assert log(NodeAdded("n1", "10.0.0.1:5555")) == (False,)
    assert log(NodeAdded("n3", "10.0.0.1:5555")) == (True,)  # the address is free again
    assert dict(log.metadata.nodes) == {"n2": "10.0.0.2:6000", "n3": "10.0.0.1:5555"}
    assert log.metadata.removed == {"n1"}


def test_a_newer_version_replaces_and_an_older_one_is_refused() -> None:
    log = cluster()
    assert log(place("m", Version(2, 5), "n1", "n2")) == (True,)
    assert log(place("m", Version(2, 4), "n3", "n4")) == (False,)
    assert log(place("m", Version(1, 99), "n3", "n4")) == (False,)  # earlier term
    assert log(place("m", Version(3, 1), "n3", "n4", checksum=8)) == (True,)
    assert log.metadata.entry("m") == IndexEntry(Version(3, 1), 8, ("n3", "n4"))


def test_the_same_version_moves_only_with_its_own_checksum_and_new_holders() -> None:
    log = cluster()
    log(place("m", Version(2, 5), "n1", "n2"))
    assert log(place("m", Version(2, 5), "n2", "n1")) == (False,)  # the same holders
    assert log(place("m", Version(2, 5), "n1", "n3", checksum=99)) == (False,)  # another write
    assert log(place("m", Version(2, 5), "n1", "n3")) == (True,)  # a move
    assert log(place("m", Version(2, 5), "n1", "n3", "n4")) == (True,)  # a repair
    assert log.metadata.entry("m") == IndexEntry(Version(2, 5), 7, ("n1", "n3", "n4"))


def test_a_batch_applies_item_by_item_and_says_which_did() -> None:
    log = cluster()
    log(place("b", Version(1, 9), "n1"))
    batch = Placed(
        (
            PlacedItem("a", Version(2, 1), 1, ("n1", "n2")),
            PlacedItem("b", Version(1, 8), 2, ("n1", "n2")),  # older than indexed
            PlacedItem("a", Version(2, 2), 3, ("n3", "n2")),  # overtakes the first item
            PlacedItem("a", Version(2, 1), 1, ("n4",)),  # now older
        )
    )
    assert log(batch) == (True, False, True, False)
    assert log.metadata.entry("a") == IndexEntry(Version(2, 2), 3, ("n2", "n3"))


def test_holders_are_kept_sorted_once_each_and_members_only() -> None:
    log = cluster()
    assert log(place("m", Version(1, 1), "n3", "n1", "n3", "ghost")) == (True,)
    assert log.metadata.entry("m") == IndexEntry(Version(1, 1), 7, ("n1", "n3"))


def test_a_node_holds_copies_only_once_it_is_a_member() -> None:
    log = cluster(nodes=2)
    assert log(place("a", Version(1, 1), "n1", "n3")) == (True,)
    assert log(NodeAdded("n3", "10.0.0.3:5555")) == (True,)
    assert log(place("b", Version(1, 2), "n1", "n3")) == (True,)
    assert log.metadata.entry("a") == IndexEntry(Version(1, 1), 7, ("n1",))
    assert log.metadata.entry("b") == IndexEntry(Version(1, 2), 7, ("n1", "n3"))


def test_load_and_holders_on_count_committed_copies() -> None:
    log = cluster()
    log(place("a", Version(1, 1), "n1", "n2"))
    log(place("b", Version(1, 2), "n2", "n3"))
    log(place("a", Version(1, 3), "n2", "n4"))  # a leaves n1
    assert log.metadata.load() == {"n1": 0, "n2": 2, "n3": 1, "n4": 1}
    assert sorted(log.metadata.holders_on("n2")) == ["a", "b"]
    assert log.metadata.holders_on("n1") == []


def test_a_removed_node_leaves_every_holder_list_and_the_voters() -> None:
    log = cluster(tolerance=1, nodes=4)
    log(place("a", Version(1, 1), "n1", "n2"))
    log(place("b", Version(1, 2), "n1"))
    assert log(NodeRemoved("n1")) == (True,)
    metadata = log.metadata
    assert metadata.entry("a") == IndexEntry(Version(1, 1), 7, ("n2",))
    assert metadata.entry("b") == IndexEntry(Version(1, 2), 7, ())  # kept: its copies are gone
    assert metadata.holders_on("n1") == []
    assert "n1" not in metadata.load()
    assert metadata.voters_wanted({"n1", "n2", "n3", "n4"}, {"n1", "n2", "n3"}) == {
        "n2",
        "n3",
        "n4",
    }
    # A Placed proposed before the removal and committed after it does not bring n1 back.
    assert log(place("c", Version(1, 3), "n1", "n3")) == (True,)
    assert metadata.entry("c") == IndexEntry(Version(1, 3), 7, ("n3",))
    # Moving "a" onto the holder set that now exists under two positions still compares by value.
    assert log(place("a", Version(1, 1), "n2")) == (False,)
    assert log(place("a", Version(1, 1), "n2", "n3")) == (True,)
    assert metadata.load() == {"n2": 1, "n3": 2, "n4": 0}


def test_voters_are_every_node_up_to_2t_plus_1() -> None:
    log = cluster(tolerance=1, nodes=3)
    assert log.metadata.voters_wanted(set(), set()) == {"n1", "n2", "n3"}


def test_beyond_2t_plus_1_live_voters_keep_their_vote_and_dead_ones_give_it_away() -> None:
    metadata = cluster(tolerance=1, nodes=6).metadata
    everyone = {f"n{i}" for i in range(1, 7)}
    assert metadata.voters_wanted(everyone, {"n4", "n5", "n6"}) == {"n4", "n5", "n6"}
    # n5 died: the first live non-voter by id takes its place.
    assert metadata.voters_wanted(everyone - {"n5"}, {"n4", "n5", "n6"}) == {"n1", "n4", "n6"}
    # Too few alive: dead voters stay ahead of dead non-voters.
    assert metadata.voters_wanted({"n1"}, {"n4", "n5", "n6"}) == {"n1", "n4", "n5"}
    # No configuration yet: the first 2T+1 live nodes by id.
    assert metadata.voters_wanted(everyone, set()) == {"n1", "n2", "n3"}


@given(st.sets(st.sampled_from([f"n{i}" for i in range(1, 8)])), st.data())
def test_voters_wanted_never_drops_a_live_voter_while_it_is_needed(
    alive: set[str], data: st.DataObject
) -> None:
    metadata = cluster(tolerance=1, nodes=7).metadata
    members = set(metadata.nodes)
    voters = data.draw(st.sets(st.sampled_from(sorted(members)), max_size=3))
    wanted = metadata.voters_wanted(alive, voters)
    assert len(wanted) == 3
    assert wanted <= members
    live_voters = voters & alive
    assert live_voters <= wanted
    assert len(wanted & alive) == min(3, len(alive))


# A plain model of the same rules, to compare with the packed index on random logs.


@dataclass
class Model:
    cluster_id: str = ""
    tolerance: int = 0
    nodes: dict[str, str] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    index: dict[str, IndexEntry] = field(default_factory=dict)
    tombstones: dict[str, tuple[Version, tuple[str, ...]]] = field(default_factory=dict)

    def apply(self, command: Command | None) -> tuple[bool, ...]:
        if command is None:
            return ()
        if isinstance(command, Formed):
            fresh = not self.cluster_id and bool(command.cluster_id)
            if fresh:
                self.cluster_id, self.tolerance = command.cluster_id, command.tolerance
            return (fresh,)
        if isinstance(command, Placed):
            return tuple(self.place(item) for item in command.items)
        if isinstance(command, Deleted):
            return tuple(self.delete(item) for item in command.items)
        if not self.cluster_id:
            return (False,)
        if isinstance(command, Released):
            return (any([self.release(command.node_id, *item) for item in command.items]),)
        if isinstance(command, NodeRemoved):
            if command.node_id not in self.nodes:
                return (False,)
            del self.nodes[command.node_id]
            self.removed.add(command.node_id)
            for key, entry in self.index.items():
                held = tuple(h for h in entry.holders if h != command.node_id)
                self.index[key] = entry._replace(holders=held)
            for key, (version, holders) in list(self.tombstones.items()):
                self.tombstones[key] = (version, tuple(h for h in holders if h != command.node_id))
                if not self.tombstones[key][1]:
                    del self.tombstones[key]
            return (True,)
        taken = {a for n, a in self.nodes.items() if n != command.node_id}
        if isinstance(command, NodeAdded):
            new = command.node_id not in self.nodes and command.node_id not in self.removed
        else:
            new = command.node_id in self.nodes
        if not new or command.address in taken:
            return (False,)
        self.nodes[command.node_id] = command.address
        return (True,)

    def place(self, item: PlacedItem) -> bool:
        if not self.cluster_id:
            return False
        holders = tuple(sorted(set(item.holders) & set(self.nodes)))
        tomb = self.tombstones.get(item.message_id)
        if tomb is not None and item.version <= tomb[0]:
            return False
        self.tombstones.pop(item.message_id, None)
        old = self.index.get(item.message_id)
        if old is not None and (
            item.version < old.version
            or (
                item.version == old.version
                and (item.checksum != old.checksum or holders == old.holders)
            )
        ):
            return False
        self.index[item.message_id] = IndexEntry(item.version, item.checksum, holders)
        return True

    def delete(self, item: DeletedItem) -> bool:
        old = self.index.get(item.message_id)
        if not self.cluster_id or old is None or old.version >= item.version:
            return False
        del self.index[item.message_id]
        if old.holders:
            self.tombstones[item.message_id] = (item.version, old.holders)
        return True

    def release(self, node_id: str, message_id: str, version: Version) -> bool:
        tomb = self.tombstones.get(message_id)
        if tomb is None or tomb[0] != version or node_id not in tomb[1]:
            return False
        left = tuple(h for h in tomb[1] if h != node_id)
        if left:
            self.tombstones[message_id] = (version, left)
        else:
            del self.tombstones[message_id]
        return True

    def load(self) -> dict[str, int]:
        counts = Counter(h for entry in self.index.values() for h in entry.holders)
        return {node_id: counts[node_id] for node_id in self.nodes}


NODE_POOL = ["n1", "n2", "n3", "n4", "n5"]
small_ids = st.sampled_from(["m1", "m2", "m3", "m4"])
small_versions = st.builds(Version, st.integers(1, 3), st.integers(0, 3))
small_deletes = st.builds(DeletedItem, small_ids, small_versions)
small_items = st.builds(
    PlacedItem,
    small_ids,
    small_versions,
    st.integers(0, 1),
    st.lists(st.sampled_from([*NODE_POOL, "ghost"]), max_size=4).map(tuple),
)
log_commands: st.SearchStrategy[Command | None] = st.one_of(
    st.none(),
    st.builds(Formed, st.sampled_from(["", "c1", "c2"]), st.integers(0, 3)),
    st.builds(NodeAdded, st.sampled_from(NODE_POOL), st.sampled_from(["a:1", "a:2", "a:3"])),
    st.builds(NodeRemoved, st.sampled_from(NODE_POOL)),
    st.builds(AddressChanged, st.sampled_from(NODE_POOL), st.sampled_from(["a:1", "a:4"])),
    st.builds(Placed, st.lists(small_items, max_size=6).map(tuple)),
    st.builds(Deleted, st.lists(small_deletes, max_size=3).map(tuple)),
    st.builds(
        Released,
        st.sampled_from(NODE_POOL),
        st.lists(st.tuples(small_ids, small_versions), max_size=3).map(tuple),
    ),
)
# Formed and the nodes come first most of the time, so that the rest of a log does something.
logs = st.tuples(
    st.lists(log_commands, max_size=40),
    st.lists(st.integers(0, 1), min_size=40, max_size=40),  # where the Raft term goes up
).map(
    lambda drawn: [
        (command, 1 + sum(drawn[1][: position + 1]))
        for position, command in enumerate(
            [Formed("c1", 1), *(NodeAdded(n, f"h:{n}") for n in NODE_POOL[:4]), *drawn[0]]
        )
    ]
)


@settings(max_examples=300)
@given(logs)
def test_the_packed_state_agrees_with_the_plain_model(
    log: list[tuple[Command | None, int]],
) -> None:
    metadata = ClusterMetadata()
    model = Model()
    for position, (command, term) in enumerate(log, start=1):
        assert metadata.apply(command, term, position) == model.apply(command)
    assert (metadata.cluster_id, metadata.tolerance) == (model.cluster_id, model.tolerance)
    assert dict(metadata.nodes) == model.nodes
    assert metadata.removed == model.removed
    assert len(metadata.index) == len(model.index)
    for message_id, entry in model.index.items():
        assert metadata.entry(message_id) == entry
    assert metadata.load() == model.load()
    for node_id in NODE_POOL:
        expected = {key for key, entry in model.index.items() if node_id in entry.holders}
        assert set(metadata.holders_on(node_id)) == expected
        assert set(metadata.tombstones_on(node_id)) == {
            (key, version) for key, (version, held) in model.tombstones.items() if node_id in held
        }
    for message_id in ("m1", "m2", "m3", "m4"):
        tomb = model.tombstones.get(message_id)
        assert metadata.tombstone(message_id) == tomb


@settings(max_examples=200)
@given(logs, st.data())
def test_replicas_that_apply_the_same_log_are_equal_however_they_started(
    log: list[tuple[Command | None, int]], data: st.DataObject
) -> None:
    """One replica applies every entry; another restores a snapshot taken part way (as a node
    that fell behind does) and applies the rest. The commands also go through their encoding,
    as they do in the log."""
    whole = ClusterMetadata()
    for position, (command, term) in enumerate(log, start=1):
        whole.apply(command, term, position)
    cut = data.draw(st.integers(0, len(log)))
    early = ClusterMetadata()
    for position, (command, term) in enumerate(log[:cut], start=1):
        early.apply(command, term, position)
    caught_up = restore(snapshot(early))
    assert caught_up == early
    for position, (command, term) in enumerate(log[cut:], start=cut + 1):
        data_bytes = None if command is None else command.encode()
        kind = EntryKind.NO_OP if data_bytes is None else EntryKind.COMMAND
        caught_up.apply_entry(Entry(position, term, data_bytes or b"", kind))
    assert caught_up == whole
    assert caught_up.load() == whole.load()
    assert caught_up.holders_on("n2") == whole.holders_on("n2")


def test_states_that_differ_are_not_equal() -> None:
    one, other = cluster(), cluster()
    assert one.metadata == other.metadata
    one(place("m", Version(1, 1), "n1"))
    other(place("m", Version(1, 1), "n2"))
    assert one.metadata != other.metadata
    one(None)
    other(place("m", Version(1, 1), "n1"))
    assert one.metadata == other.metadata
    other(None, term=2)
    one(None, term=1)
    assert one.metadata != other.metadata  # same entries, another term


def test_parts_that_contradict_each_other_are_refused() -> None:
    with pytest.raises(ValueError):
        ClusterMetadata(nodes={"n1": "a:1"}, removed=["n1"])
    log = cluster()
    log(place("m", Version(1, 1), "n1"))
    with pytest.raises(ValueError):
        ClusterMetadata(cluster_id="c1", nodes={"n2": "a:2"}, index=log.metadata.index)
