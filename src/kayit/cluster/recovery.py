"""``kayit recover`` on the node the survivors of a cluster are rebuilt around.

A cluster that lost a majority of its voters for good has no leader, ever again: no SET or GET
succeeds. An operator names the surviving nodes; the one whose Raft log is the most up to date
(``kayit.rpc.recover`` picks it) becomes the only voter and the leader, and removes every other
member for good; the other survivors follow it as learners and become voters as they catch up.

Before anything changes, it gathers each survivor's state: its Raft term, its commit point and
its pending copies. A pending copy is one whose ``Placed`` entry its holder has not applied:
that entry may have been committed on the lost nodes alone, and acknowledged. So the newest
pending version of each id, if newer than this node's log places, is adopted: committed to the
index with the survivors that hold it. Committed copies need nothing, as this node's log holds every
entry a survivor committed (checked: see ``RaftNode.force_new_cluster`` for why that, and the
survivors' highest term, make the forced step safe among them).

What is lost: ids whose every copy was on the lost nodes, and whatever the lost nodes alone had
committed besides. A SET that was never acknowledged may appear to have happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from kayit.cluster.metadata_group import MetadataGroup
from kayit.consensus.node import AlreadyLeading
from kayit.metadata.commands import Deleted, Placed, PlacedItem
from kayit.storage.store import MessageStore
from kayit.version import Version

log = logging.getLogger(__name__)


class PendingCopy(NamedTuple):
    message_id: str
    version: Version
    checksum: int  # crc32 of its bytes


@dataclass(frozen=True, slots=True)
class SurvivorState:
    """What the recovering node needs to know of a survivor."""

    node_id: str
    term: int  # its Raft term
    leader_id: str | None  # the leader it knows of
    commit_point: tuple[int, int]  # (index, term) of the last entry it knows committed
    pending: tuple[PendingCopy, ...]


@dataclass(frozen=True, slots=True)
class Recovered:
    leader_id: str
    leader_address: str
    term: int
    adopted: int  # pending copies committed to the index
    removed: tuple[str, ...]  # node ids removed for good
    message_count: int  # ids in the index now


class RecoveryRefused(Exception):
    """Nothing was changed; the text says why."""


class LogIncomplete(RecoveryRefused):
    """Another survivor committed an entry this node's log lacks: recover around another
    survivor. The one with the highest commit index always qualifies."""


# A survivor's state, asked at its gRPC address.
AskState = Callable[[str], Awaitable[SurvivorState]]


def adopt(
    pending: Mapping[str, Iterable[PendingCopy]], placed: Callable[[str], Version | None]
) -> list[PlacedItem]:
    """The index items that commit the survivors' pending copies (``pending``: node id ->
    its pending copies): for each id its newest version, held by every survivor with a copy
    of it, if the recovering node's log places (``placed``) an older version or none. A
    version its log places is committed with the recovery, and its holders promote their
    copies when they apply it.

    Copies of one version are one write, so they match; should their checksums differ, the
    one most survivors hold is adopted, and the others are dropped as not committed."""
    newest: dict[str, tuple[Version, dict[int, set[str]]]] = {}
    for node_id, copies in pending.items():
        for message_id, version, checksum in copies:
            known = newest.get(message_id)
            if known is None or known[0] < version:
                newest[message_id] = known = (version, {})
            if known[0] == version:
                known[1].setdefault(checksum, set()).add(node_id)
    items = []
    for message_id, (version, holders_by_checksum) in sorted(newest.items()):
        in_log = placed(message_id)
        if in_log is not None and in_log >= version:
            continue  # in the log already, or overwritten since
        checksum, holders = max(
            holders_by_checksum.items(), key=lambda pair: (len(pair[1]), pair[0])
        )
        items.append(PlacedItem(message_id, version, checksum, tuple(sorted(holders))))
    return items


def placed_in_log(group: MetadataGroup) -> Callable[[str], Version | None]:
    """The newest version of an id that ``group``'s log places or deletes: in the index (or a
    tombstone), or in an entry not applied yet (committed or not)."""
    unapplied: dict[str, Version] = {}
    for command in group.unapplied_commands():
        if isinstance(command, Placed | Deleted):
            for message_id, version, *_ in command.items:
                known = unapplied.get(message_id)
                if known is None or known < version:
                    unapplied[message_id] = version
    index = group.metadata

    def newest(message_id: str) -> Version | None:
        entry = index.entry(message_id)
        versions = [entry.version] if entry is not None else []
        tomb = index.tombstone(message_id)
        if tomb is not None:
            versions.append(tomb.version)
        if message_id in unapplied:
            versions.append(unapplied[message_id])
        return max(versions, default=None)

    return newest


class Recovery:
    """This node's side of ``kayit recover``: it answers ``state`` when another survivor
    recovers, and ``recover`` when it is the one the survivors are rebuilt around."""

    def __init__(self, group: MetadataGroup, store: MessageStore, ask: AskState) -> None:
        self._group = group
        self._store = store
        self._ask = ask
        self._lock = asyncio.Lock()

    async def state(self) -> SurvivorState:
        group = self._group
        copies = await self._store.pending_copies()
        return SurvivorState(
            node_id=group.id,
            term=group.term,
            leader_id=group.leader_id,
            commit_point=group.commit_point,
            pending=tuple(PendingCopy._make(copy) for copy in copies),
        )

    async def recover(self, survivors: Mapping[str, str]) -> Recovered:
        """Make this node the only voter and leader of ``survivors`` (node id -> gRPC
        address, this node included), adopting their pending copies and removing every
        other member. Raises RecoveryRefused (LogIncomplete among them), changing nothing,
        when it may not: the cluster has a leader, or could elect one, a survivor does not
        answer or is not a member, or this log lacks a survivor's committed entries."""
        async with self._lock:
            self._check_survivors(survivors)
            states = await self._gather(survivors)
            self._check_states(states)
            group = self._group
            pending = {state.node_id: state.pending for state in states}
            adopted = adopt(pending, placed_in_log(group))
            above_term = max(state.term for state in states)
            try:
                removed = await group.force_new_cluster(survivors, adopted, above_term)
            except AlreadyLeading as error:
                raise RecoveryRefused(f"this node leads already ({error})") from None
            return Recovered(
                leader_id=group.id,
                leader_address=group.address,
                term=group.term,
                adopted=len(adopted),
                removed=tuple(removed),
                message_count=group.metadata.message_count,
            )

    def _check_survivors(self, survivors: Mapping[str, str]) -> None:
        group = self._group
        if group.is_leader:
            raise RecoveryRefused(f"this node ({group.id}) leads: the cluster has a leader")
        if group.leader_id is not None:
            raise RecoveryRefused(
                f"this node follows node {group.leader_id}: the cluster has a leader"
            )
        if group.id not in survivors:
            raise RecoveryRefused(f"this node ({group.id}) is not among the survivors named")
        strangers = set(survivors) - group.members_in_log()
        if strangers:
            raise RecoveryRefused(
                f"not members of this node's cluster: {', '.join(sorted(strangers))}"
            )
        config = group.raft_config
        voting = config.voters & survivors.keys()
        if len(voting) >= config.quorum:
            raise RecoveryRefused(
                f"the survivors include {len(voting)} of the {len(config.voters)} voters, a "
                "majority: they can elect a leader, so wait for one (is one of them down?)"
            )

    async def _gather(self, survivors: Mapping[str, str]) -> list[SurvivorState]:
        async def state_of(node_id: str, address: str) -> SurvivorState:
            if node_id == self._group.id:
                return await self.state()
            try:
                state = await self._ask(address)
            except Exception as error:
                raise RecoveryRefused(
                    f"node {node_id} at {address} did not answer: {error}"
                ) from error
            if state.node_id != node_id:
                raise RecoveryRefused(f"{address} is node {state.node_id}, not node {node_id}")
            return state

        calls = (state_of(node_id, address) for node_id, address in survivors.items())
        return list(await asyncio.gather(*calls))

    def _check_states(self, states: list[SurvivorState]) -> None:
        group = self._group
        for state in states:
            if state.leader_id is not None:
                raise RecoveryRefused(
                    f"node {state.node_id} follows node {state.leader_id}: the cluster has a leader"
                )
            index, term = state.commit_point
            if not group.holds_committed(index, term):
                raise LogIncomplete(
                    f"node {state.node_id} committed entry {index} of term {term}, which this "
                    f"node's log does not hold: recover around node {state.node_id} instead"
                )
