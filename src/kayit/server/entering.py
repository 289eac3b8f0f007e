"""Entering the cluster: open the node's metadata group, then resume as the member it was,
form a new cluster or join one; and keep the data dir's cluster record up to date.

A node with no cluster state forms a new cluster only if nothing says it belongs to one: not
the cluster record its data dir holds (``kayit.cluster.record``), which the nodes sharing the
data dir keep up to date, nor a peer that is in a cluster. A node whose Raft state is damaged
sets it aside and joins its cluster again under a new id, if it has anyone to ask.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import grpc

from kayit.addresses import format_address
from kayit.cluster.metadata_group import (
    Admission,
    AdmissionRefused,
    GroupHooks,
    GroupOptions,
    MetadataGroup,
    NotLeading,
)
from kayit.cluster.record import ClusterRecord, read_record, record_path, write_record
from kayit.config import COURSE_GRPC_PORTS, DEFAULT_GRPC_PORT, ConfigError, NodeConfig, Role
from kayit.consensus.driver import DriverConfig, RaftStatus
from kayit.consensus.file_storage import RaftStateDamaged
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.peers import Peers
from kayit.rpc.raft_transport import TransportOptions
from kayit.rpc.security import cluster_metadata
from kayit.storage.atomic import sync_directory

log = logging.getLogger(__name__)

_PROBE_TIMEOUT = 1.0  # how long a node that may form a cluster waits for a peer to answer
_RECORD_EVERY = 1.0  # seconds between looks at the member addresses, for the cluster record


class ClusterEntry:
    """How one node enters its cluster, from what its flags and its data dir's cluster record
    say: ``open_group``, then ``enter``, then ``keep_record`` for as long as it is a member."""

    def __init__(self, config: NodeConfig, peers: Peers, record: ClusterRecord | None) -> None:
        self._config = config
        self._peers = peers
        # The data dir's cluster record as the node found it at start.
        self._record = record
        # Its Raft state was damaged and set aside: it must join, never form.
        self._rejoining = False

    @classmethod
    async def read(cls, config: NodeConfig, peers: Peers) -> ClusterEntry:
        """The entry of a node of ``config``; raises ConfigError if the data dir's cluster
        record cannot be read."""
        return cls(config, peers, await asyncio.to_thread(read_record, config.data_dir))

    async def open_group(
        self,
        raft_dir: Path,
        address: str,
        on_change: Callable[[RaftStatus], None],
        hooks: GroupHooks,
    ) -> MetadataGroup:
        """The node's metadata group. Raft state that is damaged cannot be trusted, not even
        to vote: if the node has anyone to ask, it is set aside and the node starts afresh,
        under a new id (kept in ``raft_dir``), to join its cluster again."""
        opening = partial(
            MetadataGroup.open,
            raft_dir,
            address,
            _group_options(self._config),
            on_change,
            hooks,
        )
        try:
            return await opening()
        except RaftStateDamaged as damage:
            if not self._peers_to_ask(address):
                raise
            aside = await asyncio.to_thread(_set_aside, raft_dir)
            log.warning(
                "%s: moved %s aside to %s; this node joins its cluster again as a new node",
                damage.problem,
                raft_dir.name,
                aside.name,
            )
            self._rejoining = True
        return await opening()

    async def enter(self, group: MetadataGroup) -> None:
        """Resume as the member this node was; or join its cluster, or a peer's, or form a
        new one (``_become_member``). Raises AdmissionRefused or ConfigError if it cannot."""
        if group.is_member:
            await group.resume()
            self._warn_if_tolerance_differs(group)
        else:
            await self._become_member(group)

    async def keep_record(self, group: MetadataGroup) -> None:
        """Keep the data dir's cluster record naming this node's cluster and the addresses of
        its members, as this node's metadata has them, for a node of this data dir that
        loses its own state. Every node of the data dir writes it when its view changes; the
        last view written wins, and a stale one is corrected as soon as its writer catches
        up."""
        data_dir = self._config.data_dir
        cluster_id = group.cluster_id
        assert cluster_id is not None
        written = self._record
        if written is not None and written.cluster_id != cluster_id:
            log.warning(
                "%s names cluster %s, but this node is in cluster %s: two clusters share the "
                "data dir %s; the record is left as it is, so give each cluster a data dir of "
                "its own",
                record_path(data_dir),
                written.cluster_id,
                cluster_id,
                data_dir,
            )
            return
        while not group.retired:
            addresses = group.metadata.nodes.values()
            if addresses:
                view = ClusterRecord.of(cluster_id, addresses)
                if view != written:
                    try:
                        await asyncio.to_thread(write_record, data_dir, view)
                    except OSError as error:
                        log.warning("cannot write %s: %s", record_path(data_dir), error)
                    else:
                        written = view
            await asyncio.sleep(_RECORD_EVERY)

    async def _become_member(self, group: MetadataGroup) -> None:
        """A node that belongs to a cluster (the data dir's record says so, or it had Raft
        state) only ever joins it. Any other node forms a new cluster if it may and no peer
        is in one; else it joins through the peers."""
        peers = self._peers_to_ask(group.address)
        record = self._record
        if record is not None or self._rejoining:
            if not peers:
                assert record is not None  # a damaged node with nobody to ask stopped at start
                raise ConfigError(
                    f"{record_path(self._config.data_dir)} says this node belongs to cluster "
                    f"{record.cluster_id}, which has no other node to ask, and this node has no "
                    "cluster state: to form a new cluster, start it with an empty --data-dir"
                )
            if record is not None and not self._rejoining and group.address not in record.nodes:
                # A new node beside others in one data dir (kayit cluster's members at first).
                log.info(
                    "joining cluster %s (named in %s): asking %s to admit this node",
                    record.cluster_id,
                    record_path(self._config.data_dir),
                    ", ".join(peers),
                )
            else:
                belongs = f"cluster {record.cluster_id}" if record else "the cluster it was in"
                log.info(
                    "this node belongs to %s%s: asking %s to admit it as a new node (to form a "
                    "new cluster instead, start it with an empty --data-dir)",
                    belongs,
                    f" (says {record_path(self._config.data_dir)})" if record else "",
                    ", ".join(peers),
                )
        else:
            may_form = self._may_form(group.address)
            if not may_form and not peers:
                raise ConfigError(
                    "this node belongs to no cluster and has nobody to ask: give --join "
                    "HOST:PORT to join a cluster, or --leader to form a new one (and --peers "
                    "HOST:PORT,... for the cluster's other nodes, to ask them first)"
                )
            if may_form and not await self._any_in_a_cluster(peers):
                await group.bootstrap(self._config.tolerance)
                return
            log.info("asking %s to admit this node", ", ".join(peers))
        await group.join(peers, self._ask_to_join)

    def _may_form(self, address: str) -> bool:
        config = self._config
        if config.role is Role.LEADER:
            return True
        port = int(address.rsplit(":", 1)[1])
        return config.role is Role.AUTO and port == DEFAULT_GRPC_PORT

    def _peers_to_ask(self, address: str) -> list[str]:
        """The nodes that may admit this one: those of the data dir's cluster record, then
        --peers and --join, then, in the course's way (no flags), the nodes of this host on
        the ports from 5555."""
        config = self._config
        asked = [*(self._record.nodes if self._record else ()), *config.peers]
        asked += (config.join or "").split(",")
        if config.role is Role.AUTO and config.grpc_port is None:
            asked += [format_address((config.grpc_listen_host, p)) for p in COURSE_GRPC_PORTS]
        return [peer for peer in dict.fromkeys(asked) if peer and peer != address]

    async def _any_in_a_cluster(self, peers: Sequence[str]) -> bool:
        """Whether any of ``peers`` is in a cluster already. One still waiting to join
        (started at the same moment) does not count: else neither would form one."""

        async def in_a_cluster(peer: str) -> bool:
            try:
                status = await self._peers.stub(peer).Status(
                    pb.StatusRequest(), timeout=_PROBE_TIMEOUT
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(status.role != "joining")

        return any(await asyncio.gather(*(in_a_cluster(peer) for peer in peers)))

    async def _ask_to_join(self, peer: str, node_id: str, address: str) -> Admission:
        record = self._record
        # The cluster of the record goes with the request: a node of another refuses at once.
        expected = record.cluster_id if record is not None else None
        try:
            reply = await self._peers.stub(peer).Join(
                pb.JoinRequest(node_id=node_id, address=address),
                timeout=self._config.rpc_timeout,
                metadata=cluster_metadata(expected),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.PERMISSION_DENIED:
                raise
            raise AdmissionRefused(
                f"{peer} refused ({error.details()}): {record_path(self._config.data_dir)} says "
                f"this node belongs to cluster {expected}: check --peers and --join, or start "
                "the node with an empty --data-dir to join another cluster"
            ) from None
        if reply.accepted:
            return Admission(reply.cluster_id, reply.tolerance, dict(reply.nodes))
        if reply.refused:
            raise AdmissionRefused(f"{peer} refused: {reply.reason}")
        if reply.leader_address and reply.leader_address != peer:
            raise NotLeading(None, reply.leader_address)
        raise ConnectionError(f"{peer}: {reply.reason}")

    def _warn_if_tolerance_differs(self, group: MetadataGroup) -> None:
        committed = group.metadata.tolerance
        if group.metadata.formed and committed != self._config.tolerance:
            log.warning(
                "TOLERANCE=%d was given, but the cluster was formed with TOLERANCE=%d, which stays",
                self._config.tolerance,
                committed,
            )


def _group_options(config: NodeConfig) -> GroupOptions:
    return GroupOptions(
        driver=DriverConfig(tick_seconds=config.heartbeat),
        fsync=config.fsync,
        dead_after=max(config.dead_after, 5.0),
        transport=TransportOptions(tls=config.tls),
    )


def _set_aside(raft_dir: Path) -> Path:
    """Rename ``raft_dir`` to ``raft.damaged-<UTC time>``, kept for whoever looks into it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = raft_dir.with_name(f"{raft_dir.name}.damaged-{stamp}")
    attempt = 1
    while aside.exists():
        attempt += 1
        aside = raft_dir.with_name(f"{raft_dir.name}.damaged-{stamp}-{attempt}")
    os.rename(raft_dir, aside)
    sync_directory(raft_dir.parent)
    return aside
