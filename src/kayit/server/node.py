"""A node's life: bind its ports, open its disk, take its role, report, and stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from functools import partial
from typing import Any

import grpc

from kayit.cluster.leader import Leader
from kayit.cluster.loop_clock import LoopClock
from kayit.cluster.membership import Membership
from kayit.cluster.repair import Repairer
from kayit.cluster.term import next_term
from kayit.config import (
    COURSE_GRPC_PORTS,
    DEFAULT_GRPC_PORT,
    ClientPorts,
    ConfigError,
    NodeConfig,
    Role,
)
from kayit.report import leader_report, member_report
from kayit.rpc.channels import SERVER_OPTIONS
from kayit.rpc.kayit_pb2_grpc import add_NodeServicer_to_server
from kayit.rpc.leader_link import LeaderLink
from kayit.rpc.peers import GrpcMemberTransport, Peers
from kayit.rpc.service import NodeService
from kayit.server.forwarding import ClientCommands, Forwarder, execute_forwarded
from kayit.server.gateway import serve_clients
from kayit.server.leadership import Leadership
from kayit.server.ports import port_is_free
from kayit.storage.disk import DiskManager
from kayit.storage.store import MessageStore

log = logging.getLogger(__name__)

_CLOCK_TICK = 0.1  # seconds between LoopClock ticks, at most (heartbeat / 4 when shorter)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._grpc = grpc.aio.server(options=SERVER_OPTIONS)
        self._peers = Peers(config.rpc_timeout)
        self._tasks: list[asyncio.Task[None]] = []
        self._client_servers: list[asyncio.Server] = []
        self._store: MessageStore | None = None
        self._repairer: Repairer | None = None

    async def start(self) -> None:
        config = self.config
        port = self._bind_grpc()
        address = f"{config.host}:{port}"
        client_ports = config.client_ports(port)
        is_leader = config.role is Role.LEADER or (
            config.role is Role.AUTO and config.join is None and port == DEFAULT_GRPC_PORT
        )
        node_dir = config.node_dir(port)
        # First: a damaged term file stops the leader before it touches anything.
        term = next_term(node_dir / "term") if is_leader else 0
        disk = DiskManager(node_dir, config.io_mode, config.fsync)
        cache = config.cache_bytes if is_leader else 0  # only the leader answers GETs
        self._store = store = MessageStore(disk, keep_versions=not is_leader, cache_bytes=cache)
        journaled = await store.open()

        leadership = Leadership(address)
        leader: Leader | None = None
        repairer: Repairer | None = None
        if is_leader:
            transport = GrpcMemberTransport(self._peers)
            clock = LoopClock(min(_CLOCK_TICK, config.heartbeat / 4))
            self._spawn(clock.run())
            leader = Leader(
                store=store,
                membership=Membership(config.dead_after, clock=clock),
                transport=transport,
                tolerance=config.tolerance,
                term=term,
                store_timeout=config.store_timeout,
                journaled=journaled,
                index_complete=not store.memory_lost,
            )
            self._repairer = repairer = Repairer(
                leader,
                transport,
                repair_after=config.repair_after,
                rate=config.repair_rate,
                scrub_every=config.scrub_every,
            )
            leadership.lead(leader)
        else:
            leadership.follow(config.join or f"{config.host}:{DEFAULT_GRPC_PORT}")
        commands = ClientCommands(leadership, Forwarder(self._peers))
        self._client_servers = await serve_clients(
            commands, config.host, client_ports, config.max_line
        )

        service = NodeService(
            address=address,
            store=store,
            leading=lambda: leadership.local,
            execute=partial(execute_forwarded, leadership),
            heartbeat_ms=int(config.heartbeat * 1000),
            on_join=self._member_joined,
            on_revived=self._member_revived,
        )
        add_NodeServicer_to_server(service, self._grpc)
        await self._grpc.start()

        if leader is not None and repairer is not None:
            self._spawn(self._watch_members(leader))
            self._spawn(repairer.run())
            self._spawn(self._report_leader(leader, repairer, address))
            log.info(
                "leader ready: clients on %s, gRPC on %s, data in %s, TOLERANCE=%d, term %d",
                _describe(config.host, client_ports),
                address,
                node_dir,
                config.tolerance,
                leader.term,
            )
        else:
            link = LeaderLink(
                peers=self._peers,
                leader=lambda: leadership.leader_address,
                address=address,
                interval=config.heartbeat,
                message_count=lambda: store.count,
            )
            self._spawn(link.run())
            self._spawn(self._report_member(link, address))
            log.info(
                "member ready: clients on %s, their commands forwarded to the leader %s; "
                "gRPC on %s, data in %s",
                _describe(config.host, client_ports),
                leadership.leader_address,
                address,
                node_dir,
            )

    async def stop(self) -> None:
        for server in self._client_servers:
            server.close()
        await self._grpc.stop(grace=1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._peers.close()
        if self._store is not None:
            await self._store.close()

    def _member_joined(self, address: str) -> None:
        self._peers.forget(address)
        self._member_revived(address)

    def _member_revived(self, address: str) -> None:
        # The same process as before: its channel stays, with any calls still on it.
        if self._repairer is not None:
            self._repairer.member_joined(address)

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

    async def _watch_members(self, leader: Leader) -> None:
        while True:
            for member in leader.membership.changes():
                if member.alive:
                    log.info("member %s is alive", member.address)
                else:
                    log.warning("member %s is dead; it is no longer chosen", member.address)
            await asyncio.sleep(self.config.heartbeat / 2)

    async def _report_leader(self, leader: Leader, repairer: Repairer, address: str) -> None:
        while True:
            await asyncio.sleep(self.config.report_every)
            text = leader_report(
                address,
                len(leader.index),
                leader.tolerance,
                leader.member_counts(),
                own_disk=leader.store.count,
                repair=repairer.progress,
            )
            print(text, flush=True)

    async def _report_member(self, link: LeaderLink, address: str) -> None:
        assert self._store is not None
        while True:
            await asyncio.sleep(self.config.report_every)
            print(
                member_report(
                    address, self._store.count, link.leader or "(none known)", link.connected
                ),
                flush=True,
            )


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
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping")
    await node.stop()
    return 0
