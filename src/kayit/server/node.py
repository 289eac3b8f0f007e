"""A node's life: bind its ports, open its disk, enter its cluster (resume, form or join),
lead while the metadata group elects it, report, and stop cleanly.

A node with no cluster state forms a new cluster only if nothing says it belongs to one: not
the cluster record its data dir holds (``kayit.cluster.record``), which the nodes sharing the
data dir keep up to date, nor a peer that is in a cluster. A node whose Raft state is damaged
sets it aside and joins its cluster again under a new id, if it has anyone to ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from kayit.cluster.leader import Leader
from kayit.cluster.loop_clock import LoopClock
from kayit.cluster.membership import Arrival, Membership
from kayit.cluster.metadata_group import (
    Admission,
    AdmissionRefused,
    GroupHooks,
    GroupOptions,
    MetadataGroup,
    NotLeading,
)
from kayit.cluster.pending import PendingCopies
from kayit.cluster.record import ClusterRecord, read_record, record_path, write_record
from kayit.cluster.recovery import Recovery
from kayit.cluster.removal import remove_member
from kayit.cluster.repair import Repairer
from kayit.config import (
    COURSE_GRPC_PORTS,
    DEFAULT_GRPC_PORT,
    ClientPorts,
    ConfigError,
    NodeConfig,
    Role,
)
from kayit.consensus.driver import DriverConfig, RaftStatus
from kayit.consensus.file_storage import RaftStateDamaged
from kayit.consensus.node import Role as RaftRole
from kayit.report import leader_report, member_report
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import SERVER_OPTIONS
from kayit.rpc.kayit_pb2_grpc import add_NodeServicer_to_server, add_RaftServicer_to_server
from kayit.rpc.members import RemovalFailed
from kayit.rpc.members import remove_member as remove_member_through
from kayit.rpc.peers import GrpcMemberTransport, Peers
from kayit.rpc.recover import ask_state
from kayit.rpc.service import NodeService
from kayit.server.forwarding import (
    ClientCommands,
    Forwarder,
    execute_forwarded,
    leader_wait,
)
from kayit.server.gateway import serve_clients
from kayit.server.leadership import Leadership
from kayit.server.ports import port_is_free
from kayit.server.retirement import RetirementWatch
from kayit.storage.atomic import sync_directory
from kayit.storage.disk import DiskManager
from kayit.storage.store import MessageStore

log = logging.getLogger(__name__)

_CLOCK_TICK = 0.1  # seconds between LoopClock ticks, at most (heartbeat / 4 when shorter)
_PROBE_TIMEOUT = 1.0  # how long a node that may form a cluster waits for a peer to answer
_SETTLE_EVERY = 5.0  # seconds between looks at every pending copy
_HAND_OVER_TIMEOUT = 2.0  # how long a stopping leader waits for its successor
_RECORD_EVERY = 1.0  # seconds between looks at the member addresses, for the cluster record


@dataclass(slots=True)
class _Leading:
    """This node's data path while it leads, and the tasks that serve it."""

    leader: Leader
    repairer: Repairer
    tasks: list[asyncio.Task[None]]


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._grpc = grpc.aio.server(options=SERVER_OPTIONS)
        self._peers = Peers(config.rpc_timeout)
        self._tasks: list[asyncio.Task[None]] = []
        self._client_servers: list[asyncio.Server] = []
        self._store: MessageStore | None = None
        self._group: MetadataGroup | None = None
        self._leading: _Leading | None = None
        self._clock = LoopClock(min(_CLOCK_TICK, config.heartbeat / 4))
        # Asks the others whether this node was removed once it heard no leader for the
        # longest election timeout.
        self._retirement = RetirementWatch(self._peers, max(2.0, 20 * config.heartbeat))
        # Set when the node cannot go on (refused by its cluster); run_node then exits.
        self.failed: asyncio.Future[str] | None = None
        # The data dir's cluster record as the node found it at start.
        self._record: ClusterRecord | None = None
        # Its Raft state was damaged and set aside: it must join, never form.
        self._rejoining = False

    async def start(self) -> None:
        config = self.config
        self.failed = asyncio.get_running_loop().create_future()
        port = self._bind_grpc()
        address = f"{config.host}:{port}"
        client_ports = config.client_ports(port)
        node_dir = config.node_dir(port)
        disk = DiskManager(node_dir, config.io_mode, config.fsync)
        self._store = store = MessageStore(disk, cache_bytes=config.cache_bytes)
        await store.open()
        self._record = await asyncio.to_thread(read_record, config.data_dir)

        pending: list[PendingCopies] = []  # made once the group knows this node's id
        hooks = GroupHooks(on_heard=self._heard, on_placed=lambda items: pending[0].placed(items))
        self._group = group = await self._open_group(node_dir / "raft", address, hooks)
        pending.append(PendingCopies(group.id, store, lambda: group.metadata))
        self._leadership = leadership = Leadership(address)
        # Clients are served at once: until a leader is known their commands wait for one.
        commands = ClientCommands(leadership, Forwarder(self._peers), leader_wait(config.heartbeat))
        self._client_servers = await serve_clients(
            commands, config.host, client_ports, config.max_line
        )
        service = NodeService(
            store=store,
            term=lambda: group.term,
            admit=group.admit,
            remove_member=partial(remove_member, group),
            status=self._status,
            execute=partial(execute_forwarded, leadership),
            recovery=Recovery(group, store, partial(ask_state, self._peers)),
        )
        add_NodeServicer_to_server(service, self._grpc)
        add_RaftServicer_to_server(group.raft_service, self._grpc)
        await self._grpc.start()
        self._spawn(self._clock.run())
        self._spawn(self._enter(group, pending[0]))
        log.info(
            "node %s: clients on %s, gRPC on %s, data in %s",
            group.id,
            _describe(config.host, client_ports),
            address,
            node_dir,
        )

    async def hand_over(self) -> None:
        """A leader that is asked to stop hands leadership over first: clients wait a
        moment instead of an election timeout."""
        if self._group is None or self._leading is None:
            return
        successor = await self._group.hand_over(_HAND_OVER_TIMEOUT)
        if successor is not None:
            log.info("handed leadership to node %s", successor)

    async def stop(self) -> None:
        for server in self._client_servers:
            server.close()
        self._step_down()
        await self._grpc.stop(grace=1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._group is not None:
            await self._group.stop()
        await self._peers.close()
        if self._store is not None:
            await self._store.close()

    # ---- entering the cluster ----------------------------------------------------------------

    def _group_options(self) -> GroupOptions:
        config = self.config
        return GroupOptions(
            driver=DriverConfig(tick_seconds=config.heartbeat),
            fsync=config.fsync,
            dead_after=max(config.dead_after, 5.0),
        )

    async def _open_group(self, raft_dir: Path, address: str, hooks: GroupHooks) -> MetadataGroup:
        """The node's metadata group. Raft state that is damaged cannot be trusted, not even
        to vote: if the node has anyone to ask, it is set aside and the node starts afresh,
        under a new id (kept in ``raft_dir``), to join its cluster again."""
        opening = partial(
            MetadataGroup.open,
            raft_dir,
            address,
            self._group_options(),
            self._leadership_changed,
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

    async def _enter(self, group: MetadataGroup, pending: PendingCopies) -> None:
        """Resume as the member this node was; or join its cluster, or a peer's, or form a
        new one (``_become_member``)."""
        try:
            if group.is_member:
                await group.resume()
                self._warn_if_tolerance_differs(group)
            else:
                await self._become_member(group)
        except (AdmissionRefused, ConfigError) as error:
            log.error("cannot enter the cluster: %s", error)
            if self.failed is not None and not self.failed.done():
                self.failed.set_result(str(error))
            return
        log.info("node %s is in cluster %s", group.id, group.cluster_id)
        self._spawn(self._stop_when_removed(group))
        self._spawn(pending.run(_SETTLE_EVERY))
        self._spawn(self._keep_record(group))
        self._spawn(self._report())

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
                    f"{record_path(self.config.data_dir)} says this node belongs to cluster "
                    f"{record.cluster_id}, which has no other node to ask, and this node has no "
                    "cluster state: to form a new cluster, start it with an empty --data-dir"
                )
            belongs = f"cluster {record.cluster_id}" if record else "the cluster it was in"
            log.info(
                "this node belongs to %s%s: asking %s to admit it as a new node (to form a new "
                "cluster instead, start it with an empty --data-dir)",
                belongs,
                f" (says {record_path(self.config.data_dir)})" if record else "",
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
                await group.bootstrap(self.config.tolerance)
                return
            log.info("asking %s to admit this node", ", ".join(peers))
        await group.join(peers, self._ask_to_join)

    def _may_form(self, address: str) -> bool:
        config = self.config
        if config.role is Role.LEADER:
            return True
        port = int(address.rsplit(":", 1)[1])
        return config.role is Role.AUTO and port == DEFAULT_GRPC_PORT

    def _peers_to_ask(self, address: str) -> list[str]:
        """The nodes that may admit this one: those of the data dir's cluster record, then
        --peers and --join, then, in the course's way (no flags), the nodes of this host on
        the ports from 5555."""
        config = self.config
        asked = [*(self._record.nodes if self._record else ()), *config.peers]
        asked += (config.join or "").split(",")
        if config.role is Role.AUTO and config.grpc_port is None:
            asked += [f"{config.host}:{port}" for port in COURSE_GRPC_PORTS]
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
        reply = await self._peers.stub(peer).Join(
            pb.JoinRequest(node_id=node_id, address=address), timeout=self.config.rpc_timeout
        )
        if reply.accepted:
            record = self._record
            if record is not None and reply.cluster_id != record.cluster_id:
                await self._leave(peer, node_id, reply.cluster_id)
                raise AdmissionRefused(
                    f"{peer} is in cluster {reply.cluster_id}, but "
                    f"{record_path(self.config.data_dir)} says this node belongs to cluster "
                    f"{record.cluster_id}: check --peers and --join, or start the node with an "
                    "empty --data-dir to join another cluster"
                )
            return Admission(reply.cluster_id, reply.tolerance, dict(reply.nodes))
        if reply.refused:
            raise AdmissionRefused(f"{peer} refused: {reply.reason}")
        if reply.leader_address and reply.leader_address != peer:
            raise NotLeading(None, reply.leader_address)
        raise ConnectionError(f"{peer}: {reply.reason}")

    async def _leave(self, peer: str, node_id: str, cluster_id: str) -> None:
        """Take ``node_id`` out of the cluster that admitted it by mistake, so that it does not
        stay there as a dead member."""
        try:
            await asyncio.to_thread(remove_member_through, node_id, [peer])
        except RemovalFailed as error:
            log.warning(
                "cluster %s admitted this node as node %s, which could not be removed again "
                "(%s): remove it with kayit member remove %s --via %s",
                cluster_id,
                node_id,
                error,
                node_id,
                peer,
            )

    async def _keep_record(self, group: MetadataGroup) -> None:
        """Keep the data dir's cluster record naming this node's cluster and the addresses of
        its members, as this node's metadata has them, for a node of this data dir that
        loses its own state. Every node of the data dir writes it when its view changes; the
        last view written wins, and a stale one is corrected as soon as its writer catches
        up."""
        data_dir = self.config.data_dir
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

    async def _stop_when_removed(self, group: MetadataGroup) -> None:
        """A node removed from the cluster (``kayit member remove``) stops for good, exit 2,
        whether it learns so while running or when it resumes on its old data dir."""
        await self._retirement.wait(group)
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(
                f"this node was removed from the cluster (it was node {group.id}): it may only "
                "come back under a new id, started with an empty data dir and --join HOST:PORT"
            )

    def _warn_if_tolerance_differs(self, group: MetadataGroup) -> None:
        committed = group.metadata.tolerance
        if group.metadata.formed and committed != self.config.tolerance:
            log.warning(
                "TOLERANCE=%d was given, but the cluster was formed with TOLERANCE=%d, which stays",
                self.config.tolerance,
                committed,
            )

    # ---- leading -----------------------------------------------------------------------------

    def _leadership_changed(self, status: RaftStatus) -> None:
        group = self._group
        assert group is not None
        leading = self._leading
        if status.role is RaftRole.LEADER:
            if leading is None or leading.leader.term != status.term:
                self._step_down()
                self._lead(group, status.term)
            return
        self._step_down()
        self._leadership.follow(group.leader_address)

    def _lead(self, group: MetadataGroup, term: int) -> None:
        config = self.config
        assert self._store is not None
        membership = Membership(config.dead_after, clock=self._clock)
        leader = Leader(
            group=group,
            store=self._store,
            membership=membership,
            transport=GrpcMemberTransport(self._peers, term),
            term=term,
            store_timeout=config.store_timeout,
        )
        repairer = Repairer(
            leader,
            repair_after=config.repair_after,
            rate=config.repair_rate,
            scrub_every=config.scrub_every,
        )
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._start_leading(leader, repairer)),
            loop.create_task(self._watch_members(leader)),
        ]
        self._leading = _Leading(leader, repairer, tasks)
        self._leadership.lead(leader)
        log.info("leading the cluster in term %d", term)

    async def _start_leading(self, leader: Leader, repairer: Repairer) -> None:
        with contextlib.suppress(Exception):  # it no longer leads: the change stops this task
            await leader.ready()
        # Only now is the metadata complete: every member gets dead_after to be heard from.
        for node_id in leader.metadata.nodes:
            if node_id != leader.id:
                leader.membership.expect(node_id)
        await repairer.run()

    def _step_down(self) -> None:
        leading, self._leading = self._leading, None
        if leading is None:
            return
        for task in leading.tasks:
            task.cancel()
        log.info("no longer leading (term %d)", leading.leader.term)

    def _heard(self, node_id: str) -> None:
        self._retirement.heard(node_id)
        leading = self._leading
        # A removed node that runs on until it finds out is no member: not alive, not reconciled.
        if leading is None or node_id in leading.leader.metadata.removed:
            return
        arrival = leading.leader.membership.heard_from(node_id)
        if arrival is Arrival.LIVE:
            return
        address = leading.leader.metadata.nodes.get(node_id)
        if arrival is Arrival.REVIVED and address is not None:
            # Dead meanwhile (restarted, paused or cut off): a channel that failed while it
            # was down would wait out its reconnect backoff.
            self._peers.forget(address)
        leading.repairer.member_joined(node_id)

    async def _watch_members(self, leader: Leader) -> None:
        while True:
            for member in leader.membership.changes():
                address = leader.metadata.nodes.get(member.node_id, "(removed)")
                if member.alive:
                    log.info("node %s at %s is alive", member.node_id, address)
                else:
                    log.warning(
                        "node %s at %s is dead; it is no longer chosen", member.node_id, address
                    )
            await asyncio.sleep(self.config.heartbeat / 2)

    # ---- status and reports ------------------------------------------------------------------

    def _status(self) -> pb.StatusReply:
        group = self._group
        assert group is not None and self._store is not None
        leading = self._leading
        reply = pb.StatusReply(
            address=group.address,
            node_id=group.id,
            term=group.term,
            tolerance=group.metadata.tolerance,
            leader_address=group.leader_address or "",
            removed=sorted(group.metadata.removed),
        )
        reply.last_log_index, reply.last_log_term = group.last_log
        if leading is None:
            reply.role = "member" if group.is_member else "joining"
            reply.message_count = self._store.count
            return reply
        reply.role = "leader"
        reply.message_count = leading.leader.message_count
        reply.members.extend(
            pb.MemberStatus(
                address=m.address,
                alive=m.alive,
                assigned=m.assigned,
                node_id=m.node_id,
                voter=m.voter,
            )
            for m in leading.leader.member_counts()
        )
        return reply

    async def _report(self) -> None:
        group = self._group
        assert group is not None and self._store is not None
        while True:
            await asyncio.sleep(self.config.report_every)
            leading = self._leading
            if leading is None:
                text = member_report(group.address, self._store.count, group.leader_address)
            else:
                leader = leading.leader
                text = leader_report(
                    group.address,
                    leader.term,
                    leader.message_count,
                    leader.tolerance,
                    leader.member_counts(),
                    own_disk=self._store.count,
                    repair=leading.repairer.progress,
                )
            print(text, flush=True)

    # ---- plumbing ----------------------------------------------------------------------------

    def _bind_grpc(self) -> int:
        host = self.config.host
        if self.config.grpc_port is not None:
            candidates = [self.config.grpc_port]
        else:
            candidates = [port for port in COURSE_GRPC_PORTS if port_is_free(host, port)]
        for port in candidates:
            try:
                return int(self._grpc.add_insecure_port(f"{host}:{port}"))
            except RuntimeError:
                continue  # taken between the probe and the bind
        wanted = candidates[0] if self.config.grpc_port is not None else "any of 5555.."
        raise ConfigError(f"cannot bind gRPC port {wanted} on {host}: in use")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(work))


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


def _describe(host: str, ports: ClientPorts) -> str:
    if ports.shared is None:
        return f"{host}:{ports.own}"
    if ports.shared == ports.own:
        return f"{host}:{ports.own} (shared with every node)"
    return f"{host}:{ports.own} and {host}:{ports.shared} (shared with every node)"


async def run_node(config: NodeConfig) -> int:
    """Run until SIGTERM or SIGINT; returns the process exit code."""
    node = Node(config)
    try:
        await node.start()
    except ConfigError as error:
        print(f"kayit node: {error}", file=sys.stderr)
        await node.stop()
        return 2
    assert node.failed is not None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    node.failed.add_done_callback(lambda _: stopping.set())
    await stopping.wait()
    log.info("stopping")
    await node.hand_over()
    await node.stop()
    if node.failed.done():
        print(f"kayit node: {node.failed.result()}", file=sys.stderr)
        return 2
    return 0
