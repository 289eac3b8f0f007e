"""ClusterMetadata: what the committed metadata log says, applied entry by entry.

Pure and deterministic: no I/O, no clock, no randomness. Every replica that applies the same
entries (or restores a snapshot and applies the rest) reaches an equal state and answers every
query alike, so the decisions taken from it (who holds what, which copies may go, who should
vote) are the same on whichever node takes them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple, assert_never

from kayit.consensus.messages import Entry, EntryKind
from kayit.metadata.commands import (
    AddressChanged,
    Command,
    Deleted,
    DeletedItem,
    Formed,
    NodeAdded,
    NodeRemoved,
    Placed,
    PlacedItem,
    Released,
    decode,
)
from kayit.metadata.index import CommittedIndex, IndexEntry
from kayit.version import UNKNOWN, Version

# Distinct holder lists remembered in their canonical form; a batch names only a few.
_CANONICAL_CACHE = 4096


class Tombstone(NamedTuple):
    """What is left of a deleted id: the delete's version, and the nodes that held a copy
    and have not yet said they let it go (``Released``)."""

    version: Version
    holders: tuple[str, ...]


class Applied(NamedTuple):
    command: Command | None  # as decoded from the entry
    flags: tuple[bool, ...]  # which parts took effect (``ClusterMetadata.apply``)


class ClusterMetadata:
    def __init__(
        self,
        *,
        cluster_id: str = "",
        tolerance: int = 0,
        nodes: Mapping[str, str] | None = None,
        removed: Iterable[str] = (),
        index: CommittedIndex | None = None,
        applied_index: int = 0,
        applied_term: int = 0,
        tombstones: Mapping[str, Tombstone] | None = None,
    ) -> None:
        """An empty state by default; with arguments, the state a snapshot describes. Raises
        ValueError for parts that contradict each other."""
        self._cluster_id = cluster_id
        self._tolerance = tolerance
        self._nodes = dict(nodes or {})  # id -> address of every member, in joining order
        self._removed = set(removed)
        self._index = CommittedIndex() if index is None else index
        self._applied_index = applied_index
        self._applied_term = applied_term
        self._tombstones = dict(tombstones or {})
        self._canonical: dict[tuple[str, ...], tuple[str, ...]] = {}
        if not self._removed.isdisjoint(self._nodes):
            raise ValueError("a node is both a member and removed")
        if not self._index.nodes_named() <= self._nodes.keys():
            raise ValueError("the index names a holder that is not a member")
        if any(key in self._index for key in self._tombstones):
            raise ValueError("an id is both indexed and deleted")
        if any(
            not tomb.holders or not set(tomb.holders) <= self._nodes.keys()
            for tomb in self._tombstones.values()
        ):
            raise ValueError("a tombstone names no holder, or one that is not a member")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClusterMetadata):
            return NotImplemented
        return (
            self.cluster_id == other.cluster_id
            and self.tolerance == other.tolerance
            and self._nodes == other._nodes
            and self._removed == other._removed
            and self.applied_index == other.applied_index
            and self.last_leader_term == other.last_leader_term
            and self._index == other._index
            and self._tombstones == other._tombstones
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"ClusterMetadata({self.cluster_id!r}, tolerance={self.tolerance}, "
            f"nodes={len(self._nodes)}, entries={len(self._index)}, "
            f"applied={self.applied_index}@{self.last_leader_term})"
        )

    @property
    def cluster_id(self) -> str:
        """Empty until the cluster is formed."""
        return self._cluster_id

    @property
    def formed(self) -> bool:
        return bool(self._cluster_id)

    @property
    def tolerance(self) -> int:
        """The committed TOLERANCE: once formed, flags and files no longer count."""
        return self._tolerance

    @property
    def applied_index(self) -> int:
        """The Raft index of the last entry applied."""
        return self._applied_index

    @property
    def last_leader_term(self) -> int:
        """The Raft term of the last entry applied. Terms never fall along a log, so a leader
        of this term has committed an entry: the deletion rule rests on that."""
        return self._applied_term

    @property
    def nodes(self) -> Mapping[str, str]:
        """Member id -> address, in the order they joined."""
        return MappingProxyType(self._nodes)

    @property
    def removed(self) -> frozenset[str]:
        return frozenset(self._removed)

    @property
    def message_count(self) -> int:
        """Ids in the committed index."""
        return len(self._index)

    @property
    def tombstone_count(self) -> int:
        return len(self._tombstones)

    @property
    def tombstones(self) -> Mapping[str, Tombstone]:
        """Deleted ids whose former holders have not all let their copies go."""
        return MappingProxyType(self._tombstones)

    @property
    def index(self) -> CommittedIndex:
        """The committed index, to read (snapshots do); only ``apply`` changes it."""
        return self._index

    def apply_entry(self, entry: Entry) -> Applied:
        """Apply a committed Raft entry. Only a COMMAND entry carries a metadata command; the
        others (a new leader's no-op, a voter configuration) still count for their term."""
        command = decode(entry.data) if entry.kind is EntryKind.COMMAND else None
        return Applied(command, self.apply(command, entry.term, entry.index))

    def apply(self, command: Command | None, term: int, index: int) -> tuple[bool, ...]:
        """Apply the command of the committed entry at (``term``, ``index``); None for an
        entry without one. Returns which parts took effect: one flag per item of a Placed,
        one flag for any other command, none for None.

        Entries without a command may be left out (the indexes then skip them), at a cost:
        ``last_leader_term`` moves only with the entries applied, so a new leader's no-op
        lets abandoned copies go before its first command does.

        A command that does not fit the state (a node added twice, a version older than the
        indexed one) changes nothing and gets False: the same on every replica. Raises
        ValueError only for an entry that does not come after the last one applied (an index
        not above it, a term below it), which is a bug of the caller."""
        if index <= self.applied_index or term < self.last_leader_term:
            raise ValueError(
                f"entry {index} of term {term} does not follow entry {self.applied_index} "
                f"of term {self.last_leader_term}"
            )
        self._applied_index = index
        self._applied_term = term
        if command is None:
            return ()
        if isinstance(command, Placed):
            return self._place(command.items)
        if isinstance(command, Deleted):
            return self._delete(command.items)
        if isinstance(command, Released):
            return (self._release(command.node_id, command.items),)
        return (self._apply_change(command),)

    def _delete(self, items: Iterable[DeletedItem]) -> tuple[bool, ...]:
        """Each id indexed at an older version than its delete leaves the index; its holders
        are kept in a tombstone until they let their copies go."""
        if not self.formed:
            return tuple(False for _ in items)
        applied = []
        for message_id, version in items:
            entry = self._index.get(message_id)
            if entry is None or entry.version >= version:
                applied.append(False)  # never set, deleted already, or set again since
                continue
            self._index.remove(message_id)
            if entry.holders:
                self._tombstones[message_id] = Tombstone(version, entry.holders)
            applied.append(True)
        return tuple(applied)

    def _release(self, node_id: str, items: Iterable[tuple[str, Version]]) -> bool:
        changed = False
        for message_id, version in items:
            tomb = self._tombstones.get(message_id)
            if tomb is None or tomb.version != version or node_id not in tomb.holders:
                continue
            changed = True
            self._drop_from_tombstone(message_id, tomb, node_id)
        return changed

    def _drop_from_tombstone(self, message_id: str, tomb: Tombstone, node_id: str) -> None:
        holders = tuple(h for h in tomb.holders if h != node_id)
        if holders:
            self._tombstones[message_id] = Tombstone(tomb.version, holders)
        else:
            del self._tombstones[message_id]

    def _apply_change(self, command: Formed | NodeAdded | NodeRemoved | AddressChanged) -> bool:
        if isinstance(command, Formed):
            if self.formed or not command.cluster_id or command.tolerance < 0:
                return False
            self._cluster_id = command.cluster_id
            self._tolerance = command.tolerance
            return True
        if not self.formed:
            return False
        if isinstance(command, NodeAdded):
            if command.node_id in self._nodes or command.node_id in self._removed:
                return False
            return self._set_address(command.node_id, command.address)
        if isinstance(command, AddressChanged):
            if command.node_id not in self._nodes:
                return False
            return self._set_address(command.node_id, command.address)
        if isinstance(command, NodeRemoved):
            if command.node_id not in self._nodes:
                return False
            del self._nodes[command.node_id]
            self._removed.add(command.node_id)
            self._index.drop_holder(command.node_id)
            for message_id, tomb in list(self._tombstones.items()):
                if command.node_id in tomb.holders:
                    self._drop_from_tombstone(message_id, tomb, command.node_id)
            self._canonical.clear()
            return True
        assert_never(command)

    def _set_address(self, node_id: str, address: str) -> bool:
        """Two members never share an address: one would receive the other's copies."""
        if any(other != node_id and known == address for other, known in self._nodes.items()):
            return False
        self._nodes[node_id] = address
        self._canonical.clear()
        return True

    def _place(self, items: Iterable[PlacedItem]) -> tuple[bool, ...]:
        if not self.formed:
            return tuple(False for _ in items)
        if self._tombstones:
            return tuple(map(self._place_past_tombstone, items))
        place, canonical = self._index.place, self._canonical_holders
        return tuple(
            place(message_id, version, checksum, canonical(holders))
            for message_id, version, checksum, holders in items
        )

    def _place_past_tombstone(self, item: PlacedItem) -> bool:
        """A version of a deleted id takes effect only if newer than the delete; then the
        tombstone goes: the new version is enough to let older copies go."""
        message_id, version, checksum, holders = item
        tomb = self._tombstones.get(message_id)
        if tomb is not None:
            if version <= tomb.version:
                return False
            del self._tombstones[message_id]
        return self._index.place(message_id, version, checksum, self._canonical_holders(holders))

    def _canonical_holders(self, listed: tuple[str, ...]) -> tuple[str, ...]:
        """A holder list as the index keeps it: sorted, without repeats, members only (a node
        removed while the entry was on its way holds nothing)."""
        canonical = self._canonical.get(listed)
        if canonical is None:
            if len(self._canonical) >= _CANONICAL_CACHE:
                self._canonical.clear()
            canonical = tuple(sorted({h for h in listed if h in self._nodes}))
            self._canonical[listed] = canonical
        return canonical

    def entry(self, message_id: str) -> IndexEntry | None:
        return self._index.get(message_id)

    def ids(self) -> list[str]:
        """Every id in the committed index, as it is at this call."""
        return self._index.ids()

    def tombstone(self, message_id: str) -> Tombstone | None:
        """What is left of a deleted id while its tombstone is kept; None for any other."""
        return self._tombstones.get(message_id)

    def tombstones_on(self, node_id: str) -> list[tuple[str, Version]]:
        """The deleted ids (and their deletes' versions) ``node_id`` has not let go of."""
        return [(key, t.version) for key, t in self._tombstones.items() if node_id in t.holders]

    def holders_on(self, node_id: str) -> list[str]:
        """The ids the index places a copy of on ``node_id`` (a scan of the whole index)."""
        return self._index.held_by(node_id)

    def under_placed(self) -> list[str]:
        """The ids with fewer than TOLERANCE + 1 holders: a holder lost its copy, or left
        the cluster (``NodeRemoved``), and no repair has placed another yet."""
        return self._index.held_by_fewer(self.tolerance + 1)

    def load(self) -> dict[str, int]:
        """Committed copies on each member, for placement."""
        copies = self._index.load()
        return {node_id: copies[node_id] for node_id in self._nodes}

    def voters_wanted(self, alive: Collection[str], voters: Collection[str]) -> frozenset[str]:
        """The members that should vote in the metadata log.

        All of them while there are at most 2T+1 (T = tolerance): every node then counts
        towards a majority. Beyond that, 2T+1 of them, taken in this order: live current
        voters, other live members, current voters not alive, the rest; ties by node id. A
        live voter therefore keeps its vote, and a voter that died gives it to a live member,
        so that a majority stays reachable. Removed nodes never vote.

        ``alive`` is the caller's judgement (give it a grace period, or a pause reshuffles
        the voters); ``voters`` the current configuration. The caller moves from the current
        voters to these one change at a time."""
        limit = 2 * self.tolerance + 1
        if len(self._nodes) <= limit:
            return frozenset(self._nodes)
        ranked = sorted(
            self._nodes,
            key=lambda node_id: (node_id not in alive, node_id not in voters, node_id),
        )
        return frozenset(ranked[:limit])

    def copies_to_delete(
        self,
        node_id: str,
        inventory: Iterable[tuple[str, Version]],
    ) -> list[tuple[str, Version]]:
        """The copies in ``node_id``'s inventory that committed metadata allows to delete.

        A copy may go only if
        - its id was deleted at a newer version than the copy's (a tombstone is kept); or
        - the index has a newer version of its id (the copy was overwritten), or the same
          version with holders that exclude this node (the copy was moved, or the node lost
          it once and was replaced); or
        - the index does not have its version (the id is unknown, or indexed older) and the
          copy's term is below ``last_leader_term``: a leader of a later term has committed
          since, so the Placed entry of that copy, never committed so far, never will be
          (it is a copy of a SET that was never acknowledged).
        Nothing else is deleted: a copy of a version the index has not seen yet, of the
        current term or a later one, may be a SET under way, and an index is never taken to
        have lost entries. A copy whose version is UNKNOWN (not recorded) is kept: the caller
        must match it by checksum first.

        This holds only while a version's Placed is proposed by the leader of the version's
        term alone: a leader may re-place a version the index already has (a repair or a
        move), never adopt a newer copy that an earlier leader left.

        The leader holds back more while a SET or repair of an id is under way
        (``Leader._may_delete``): a repair stores the copy before its Placed commits. Take
        ``inventory`` after this state applied every entry committed before those copies
        were stored (on the leader: after a read index), or a repair's new holder, not yet
        applied here, would look moved."""
        tombstones = self._tombstones
        return [
            (message_id, version)
            for message_id, version in inventory
            if version != UNKNOWN
            and (
                (message_id in tombstones and version <= tombstones[message_id].version)
                or _deletable(self._index.get(message_id), version, node_id, self.last_leader_term)
            )
        ]


def _deletable(
    entry: IndexEntry | None, version: Version, node_id: str, last_leader_term: int
) -> bool:
    if entry is not None and entry.version >= version:
        # Committed: overwritten since, or placed on other nodes.
        return entry.version > version or node_id not in entry.holders
    # Never committed so far; it never will be once a later term has committed.
    return version.term < last_leader_term
