"""The gauges: what a node is at the moment it is scraped, read then from the node itself
(``NodeState``), so that nothing is kept up to date between scrapes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

ROLES = ("leader", "member", "joining")


@dataclass(frozen=True, slots=True)
class LeaderState:
    """What only the leader knows."""

    members_alive: int  # the other nodes
    members_dead: int
    under_replicated: int  # of the latest repair pass: not yet made whole again
    repair_pass_messages: int  # found missing copies by the latest repair pass
    repair_pass_repaired: int  # of those, made whole again
    backlog: dict[str, int]  # bytes of copies on their way to each member, by address


@dataclass(frozen=True, slots=True)
class NodeState:
    role: str  # one of ROLES
    term: int
    last_log_index: int
    messages_stored: int  # committed copies on this node's disk
    messages_indexed: int  # ids in the committed metadata (the cluster's messages)
    raft_log_bytes: int  # this node's Raft dir: its log, snapshot and term files
    journal_bytes: int  # the journal of the copies' versions and checksums
    disk_sync_failures: int
    leader: LeaderState | None


class NodeStateCollector(Collector):
    def __init__(self, state: Callable[[], NodeState | None]) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self._state()
        if state is None:  # still starting: the node has no disk or group yet
            return
        role = GaugeMetricFamily(
            "kayit_role", "1 for the role this node has now, 0 for the others", labels=["role"]
        )
        for name in ROLES:
            role.add_metric([name], 1.0 if state.role == name else 0.0)
        yield role
        yield _gauge("kayit_raft_term", "The Raft term this node is in", state.term)
        yield _gauge(
            "kayit_raft_log_last_index", "The last entry of this node's Raft log",
            state.last_log_index,
        )  # fmt: skip
        yield _gauge(
            "kayit_messages_stored", "Committed copies on this node's disk", state.messages_stored
        )
        yield _gauge(
            "kayit_messages_indexed",
            "Messages in the cluster's committed index, as this node's metadata has it",
            state.messages_indexed,
        )
        sizes = GaugeMetricFamily(
            "kayit_log_bytes", "Bytes on disk of this node's logs", labels=["log"]
        )
        sizes.add_metric(["raft"], state.raft_log_bytes)
        sizes.add_metric(["journal"], state.journal_bytes)
        yield sizes
        yield CounterMetricFamily(
            "kayit_disk_sync_failures",
            "Syncs of this node's disk that failed since it started",
            value=state.disk_sync_failures,
        )
        leader = state.leader
        if leader is None:
            return
        members = GaugeMetricFamily(
            "kayit_members",
            "The other nodes of the cluster, alive or dead (the leader only)",
            labels=["state"],
        )
        members.add_metric(["alive"], leader.members_alive)
        members.add_metric(["dead"], leader.members_dead)
        yield members
        backlog = GaugeMetricFamily(
            "kayit_replication_backlog_bytes",
            "Bytes of copies the leader has given to a member and it has not stored yet",
            labels=["member"],
        )
        for address, size in leader.backlog.items():
            backlog.add_metric([address], size)
        yield backlog
        yield _gauge(
            "kayit_under_replicated",
            "Messages the latest repair pass found short of TOLERANCE + 1 copies and has not "
            "made whole yet (the leader only)",
            leader.under_replicated,
        )
        yield _gauge(
            "kayit_repair_pass_messages",
            "Messages the latest repair pass set out to repair (the leader only)",
            leader.repair_pass_messages,
        )
        yield _gauge(
            "kayit_repair_pass_repaired",
            "Messages the latest repair pass made whole again so far (the leader only)",
            leader.repair_pass_repaired,
        )


def size_of(path: Path) -> int:
    """The bytes of the file at ``path``; 0 if there is none."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def bytes_in(directory: Path) -> int:
    """The bytes of the files directly in ``directory``."""
    try:
        with os.scandir(directory) as entries:
            return sum(entry.stat().st_size for entry in entries if entry.is_file())
    except OSError:
        return 0


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
