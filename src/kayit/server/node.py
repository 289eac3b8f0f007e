"""A node's life: bind its ports, open its disk, enter its cluster (resume, form or join:
``kayit.server.entering``), lead while the metadata group elects it, report, and stop cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc

from kayit.addresses import format_address
from kayit.cluster.leader import Leader
from kayit.cluster.loop_clock import LoopClock
from kayit.cluster.membership import Arrival, Membership
from kayit.cluster.metadata_group import AdmissionRefused, GroupHooks, MetadataGroup
from kayit.cluster.pending import PendingCopies
from kayit.cluster.recovery import Recovery
from kayit.cluster.removal import remove_member
from kayit.cluster.repair import Repairer
from kayit.config import COURSE_GRPC_PORTS, ClientPorts, ConfigError, NodeConfig
from kayit.consensus.driver import RaftStatus
from kayit.consensus.node import Role as RaftRole
from kayit.metrics.dashboard import ClusterView, dashboard_page
from kayit.metrics.history import CommandHistory
from kayit.metrics.http import MetricsServer
from kayit.metrics.instruments import NodeMetrics
from kayit.metrics.replication import MeasuredTransport
from kayit.metrics.state import LeaderState, NodeState, NodeStateCollector, bytes_in, size_of
from kayit.report import ChangeReport, leader_report, member_report
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import SERVER_OPTIONS
from kayit.rpc.kayit_pb2_grpc import add_NodeServicer_to_server, add_RaftServicer_to_server
from kayit.rpc.peers import GrpcMemberTransport, Peers
from kayit.rpc.recover import ask_state
from kayit.rpc.security import ClusterCheck, add_port
from kayit.rpc.service import NodeService
from kayit.server.access import ClientAccess, is_loopback
from kayit.server.entering import ClusterEntry
from kayit.server.forwarding import (
    ClientCommands,
    Forwarder,
    execute_forwarded,
    keys_forwarded,
    leader_wait,
)
from kayit.server.leadership import Leadership
from kayit.server.listeners import ClientListeners, serve_clients
from kayit.server.ports import port_is_free
from kayit.server.retirement import RetirementWatch
from kayit.storage.disk import DiskManager
from kayit.storage.store import JOURNAL_FILE, MessageStore
from kayit.supervision import Work, supervise

log = logging.getLogger(__name__)

_CLOCK_TICK = 0.1  # seconds between LoopClock ticks, at most (heartbeat / 4 when shorter)
_SETTLE_EVERY = 5.0  # seconds between looks at every pending copy
_HAND_OVER_TIMEOUT = 2.0  # how long a stopping leader waits for its successor
# How long a stopping node gives its clients' commands under way to finish and be answered.
_CLIENTS_FINISH_TIMEOUT = 2.0


@dataclass(slots=True)
class _Leading:
    """This node's data path while it leads, and the tasks that serve it."""

    leader: Leader
    repairer: Repairer
    tasks: list[asyncio.Task[None]]


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._grpc = grpc.aio.server(
            options=SERVER_OPTIONS, interceptors=[ClusterCheck(self._cluster_id)]
        )
        self._peers = Peers(config.rpc_timeout, config.tls, self._cluster_id)
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: ClientListeners | None = None
        self._store: MessageStore | None = None
        self._group: MetadataGroup | None = None
        self._leading: _Leading | None = None
        self._clock = LoopClock(min(_CLOCK_TICK, config.heartbeat / 4))
        # Asks the others whether this node was removed once it heard no leader for the
        # longest election timeout.
        self._retirement = RetirementWatch(self._peers, max(2.0, 20 * config.heartbeat))
        # Set when the node cannot go on (refused by its cluster); run_node then exits.
        self.failed: asyncio.Future[str] | None = None
        self.metrics = NodeMetrics()
        self.metrics.registry.register(NodeStateCollector(self._state))
        self._metrics_server: MetricsServer | None = None
        self._node_dir: Path | None = None

    async def start(self) -> None:
        config = self.config
        self.failed = asyncio.get_running_loop().create_future()
        port = self._bind_grpc()
        address = config.announced_address(port)
        client_ports = config.client_ports(port)
        await self._serve_metrics(port)
        self._node_dir = node_dir = config.node_dir(port)
        disk = DiskManager(
            node_dir, config.io_mode, config.fsync, sync_timed=self.metrics.fsync.observe
        )
        self._store = store = MessageStore(disk, cache_bytes=config.cache_bytes)
        await store.open()
        entry = await ClusterEntry.read(config, self._peers)

        pending: list[PendingCopies] = []  # made once the group knows this node's id
        hooks = GroupHooks(
            on_heard=self._heard,
            on_placed=lambda items: pending[0].placed(items),
            on_failure=self._metadata_failed,
        )
        self._group = group = await entry.open_group(
            node_dir / "raft", address, self._leadership_changed, hooks
        )
        pending.append(PendingCopies(group.id, store, lambda: group.metadata))
        self._leadership = leadership = Leadership(address)
        # Clients are served at once: until a leader is known their commands wait for one.
        commands = ClientCommands(leadership, Forwarder(self._peers), leader_wait(config.heartbeat))
        self._clients = await serve_clients(
            commands,
            config.client_listen_host,
            client_ports,
            config.max_line,
            ClientAccess(config.requirepass, config.insecure),
            config.client_limits,
            self.metrics,
            config.tls.client_port_context() if config.client_tls and config.tls else None,
        )
        service = NodeService(
            store=store,
            term=lambda: group.term,
            admit=group.admit,
            remove_member=partial(remove_member, group),
            status=self._status,
            execute=partial(self._execute_forwarded, leadership),
            keys=partial(keys_forwarded, leadership),
            recovery=Recovery(group, store, partial(ask_state, self._peers)),
        )
        add_NodeServicer_to_server(service, self._grpc)
        add_RaftServicer_to_server(group.raft_service, self._grpc)
        await self._grpc.start()
        self._spawn("the loop clock", self._clock.run)
        self._spawn("entering the cluster", partial(self._enter, entry, group, pending[0]))
        grpc_on = format_address((config.grpc_listen_host, port))
        log.info(
            "node %s: clients on %s, gRPC on %s, data in %s",
            group.id,
            _describe(config.client_listen_host, client_ports),
            grpc_on if grpc_on == address else f"{grpc_on} (announced as {address})",
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
        if self._clients is not None:
            await self._clients.finish(_CLIENTS_FINISH_TIMEOUT)
        if self._metrics_server is not None:
            self._metrics_server.close()
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

    async def _enter(
        self, entry: ClusterEntry, group: MetadataGroup, pending: PendingCopies
    ) -> None:
        """Enter the cluster (``ClusterEntry.enter``), then do a member's work; a node that
        cannot enter fails, and run_node exits."""
        try:
            await entry.enter(group)
        except Exception as error:  # entering cannot be retried: the group started, or failed
            if isinstance(error, AdmissionRefused | ConfigError):
                log.error("cannot enter the cluster: %s", error)
            else:
                log.exception("entering the cluster failed")
            if self.failed is not None and not self.failed.done():
                self.failed.set_result(str(error))
            return
        log.info("node %s is in cluster %s", group.id, group.cluster_id)
        self._spawn("the removal watch", partial(self._stop_when_removed, group))
        self._spawn("the pending copies' settling", partial(pending.run, _SETTLE_EVERY))
        self._spawn("the cluster record", partial(entry.keep_record, group))
        self._spawn("the report", self._report)

    async def _stop_when_removed(self, group: MetadataGroup) -> None:
        """A node removed from the cluster (``kayit member remove``) stops for good, exit 2,
        whether it learns so while running or when it resumes on its old data dir."""
        await self._retirement.wait(group)
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(
                f"this node was removed from the cluster (it was node {group.id}): it may only "
                "come back under a new id, started with an empty data dir and --join HOST:PORT"
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
            transport=MeasuredTransport(GrpcMemberTransport(self._peers, term), self.metrics),
            term=term,
            store_timeout=config.store_timeout,
        )
        repairer = Repairer(
            leader,
            repair_after=config.repair_after,
            rate=config.repair_rate,
            scrub_every=config.scrub_every,
        )
        tasks = [
            supervise(f"repair (term {term})", partial(self._start_leading, leader, repairer)),
            supervise(f"the member watch (term {term})", partial(self._watch_members, leader)),
        ]
        desk = self._clients.desk(self._leadership.address) if self._clients else None
        if desk is not None:
            tasks.append(supervise(f"taking the shared port's clients (term {term})", desk.run))
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

    def _metadata_failed(self, error: BaseException) -> None:
        """Going on without the metadata log would leave a node with a view of its cluster
        that never changes again: it stops, and says why."""
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(
                f"the cluster metadata could not be written here ({error}); this node stopped "
                "taking part in its cluster: fix the cause and start it again"
            )

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
        if address is not None:
            # Dead meanwhile (restarted, paused or cut off), or new and probed before it
            # listened (kayit cluster starts every node with the others as --peers): a channel
            # that failed while it was down would wait out its reconnect backoff, and fail the
            # first calls to it, which would count it dead at once.
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
        reply.disk_sync_failures = self._store.sync_health.failures
        reply.disk_sync_error = self._store.sync_health.error
        reply.backlog = self._store.backlog
        reply.backlog_bound = self._store.backlog_bound
        if leading is None:
            reply.role = "member" if group.is_member else "joining"
            reply.message_count = self._store.count
            return reply
        reply.role = "leader"
        reply.message_count = leading.leader.message_count
        reply.under_replicated = leading.repairer.outstanding
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
        report = ChangeReport()
        while True:
            await asyncio.sleep(self.config.report_every)
            leading = self._leading
            if leading is None:
                lines = member_report(
                    group.address,
                    self._store.count,
                    group.leader_address,
                    sync=self._store.sync_health,
                    backlog=self._store.backlog,
                )
            else:
                leader = leading.leader
                lines = leader_report(
                    group.address,
                    leader.term,
                    leader.message_count,
                    leader.tolerance,
                    leader.member_counts(),
                    own_disk=self._store.count,
                    under_replicated=leading.repairer.outstanding,
                    repair=leading.repairer.progress,
                    sync=self._store.sync_health,
                    backlog=self._store.backlog,
                )
            report.log(lines)

    # ---- metrics and the dashboard -----------------------------------------------------------

    async def _serve_metrics(self, grpc_port: int) -> None:
        """/metrics and the dashboard on the metrics port, if the node has one."""
        history = CommandHistory(self.metrics)
        view = ClusterView(self._ready_status, self._state, self._peers, history)
        server = MetricsServer(self.metrics.registry, dashboard_page(), view.json)
        if await server.open(self.config, grpc_port):
            self._metrics_server = server
            self._spawn("the command history", history.run)

    async def _execute_forwarded(
        self, leadership: Leadership, batch: pb.ClientBatch
    ) -> pb.ClientResults:
        self.metrics.forwarded_in.inc(len(batch.commands))
        return await execute_forwarded(leadership, batch)

    def _ready_status(self) -> pb.StatusReply | None:
        if self._group is None or self._store is None:
            return None
        return self._status()

    def _state(self) -> NodeState | None:
        """What the gauges show, read when scraped."""
        group, store, node_dir = self._group, self._store, self._node_dir
        if group is None or store is None or node_dir is None:
            return None
        leading = self._leading
        leader_state = None
        if leading is not None:
            members = leading.leader.member_counts()
            alive = sum(1 for m in members if m.alive)
            progress = leading.repairer.progress
            leader_state = LeaderState(
                members_alive=alive,
                members_dead=len(members) - alive,
                under_replicated=progress.under_replicated - progress.repaired,
                repair_pass_messages=progress.under_replicated,
                repair_pass_repaired=progress.repaired,
                backlog={m.address: leading.leader.replication_backlog(m.node_id) for m in members},
            )
        return NodeState(
            role="leader" if leading else "member" if group.is_member else "joining",
            term=group.term,
            last_log_index=group.last_log[0],
            messages_stored=store.count,
            messages_indexed=group.metadata.message_count,
            raft_log_bytes=bytes_in(node_dir / "raft"),
            journal_bytes=size_of(node_dir / JOURNAL_FILE),
            disk_sync_failures=store.sync_health.failures,
            leader=leader_state,
        )

    # ---- plumbing ----------------------------------------------------------------------------

    def _bind_grpc(self) -> int:
        host = self.config.grpc_listen_host
        if self.config.tls is None and not is_loopback(host):
            # Whoever reaches a node's gRPC port can change every copy, join and vote.
            if not self.config.insecure:
                flag = "--host" if self.config.grpc_host is None else "--grpc-host"
                raise ConfigError(
                    f"{flag} {host} would serve gRPC beyond loopback without TLS, where anyone "
                    "who reaches it could change every copy: give --tls-dir DIR (see kayit "
                    "certs), or --insecure to serve it plainly all the same"
                )
            log.warning(
                "gRPC on %s is served without TLS (--insecure): anyone who can reach it can "
                "change every copy; consider --tls-dir",
                host,
            )
        if self.config.grpc_port is not None:
            candidates = [self.config.grpc_port]
        else:
            candidates = [port for port in COURSE_GRPC_PORTS if port_is_free(host, port)]
        for port in candidates:
            try:
                return add_port(self._grpc, format_address((host, port)), self.config.tls)
            except RuntimeError:
                continue  # taken between the probe and the bind
        wanted = candidates[0] if self.config.grpc_port is not None else "any of 5555.."
        raise ConfigError(f"cannot bind gRPC port {wanted} on {host}: in use")

    def _cluster_id(self) -> str | None:
        return self._group.cluster_id if self._group is not None else None

    def _spawn(self, name: str, work: Work) -> None:
        """Run ``work`` for as long as the node, restarted if it fails (``supervise``)."""
        self._tasks.append(supervise(name, work))


def _describe(host: str, ports: ClientPorts) -> str:
    own = format_address((host, ports.own))
    if ports.shared is None:
        return own
    if ports.shared == ports.own:
        return f"{own} (shared with every node)"
    return f"{own} and {format_address((host, ports.shared))} (shared with every node)"


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
