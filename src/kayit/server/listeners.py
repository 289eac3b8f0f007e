"""The node's client ports: its own, and the one every node of the host shares.

The own port is an ordinary asyncio server. The shared port (SO_REUSEPORT: the kernel spreads
new connections over the nodes listening, so clients of it are served while any of them lives)
is accepted here by hand, so that a member can pass each new connection to the leader's process
before serving it (``kayit.server.handoff``); what it cannot pass on it serves itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Coroutine
from functools import partial
from typing import Any

from kayit.config import ClientLimits, ClientPorts, ConfigError
from kayit.metrics.instruments import NodeMetrics
from kayit.server.access import ClientAccess
from kayit.server.client_limits import ClientSlots, PartialLines, fit_open_files
from kayit.server.forwarding import ClientCommands
from kayit.server.gateway import ClientConnection, Clients
from kayit.server.handoff import Desk, HandOver, desk_address

log = logging.getLogger(__name__)

_ACCEPT_PAUSE = 0.1  # seconds: after accept fails (out of file descriptors), before the next


class ClientListeners:
    """Listens on the client ports; ``close`` stops new connections (open ones go on)."""

    def __init__(
        self, clients: Clients, ports: ClientPorts, host: str, tls: ssl.SSLContext | None
    ) -> None:
        self._clients = clients
        self._ports = ports
        self._host = host
        self._tls = tls
        self._servers: list[asyncio.Server] = []
        self._shared: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._hand_over: HandOver | None = None

    async def open(self, hand_over: HandOver | None) -> None:
        """Raises ConfigError when a port cannot be had."""
        own, shared = self._ports.own, self._ports.shared
        self._hand_over = hand_over
        if own != shared:
            try:
                self._servers.append(await self._serve_own(own))
            except OSError as error:
                raise ConfigError(f"cannot open client port {self._host}:{own}: {error}") from error
        if shared is not None:
            try:
                self._shared = _listen_shared(self._host, shared)
            except OSError as error:
                self.close()
                what = "open" if shared == own else "share"
                raise ConfigError(
                    f"cannot {what} client port {self._host}:{shared}: {error}"
                ) from error
        for listener in self._shared:
            self._spawn(self._accept(listener))

    def desk(self, address: str) -> Desk | None:
        """Where this node, while it leads from gRPC ``address``, takes the shared port's
        connections that the other nodes of the host pass on; None without a shared port."""
        if self._ports.shared is None:
            return None
        return Desk(desk_address(self._host, self._ports.shared, address), self.serve_shared)

    def serve_shared(self, connection: socket.socket) -> None:
        """Serve a connection of the shared port here: TLS, if any, starts now."""
        self._spawn(self._adopt(connection))

    async def finish(self, timeout: float) -> None:
        """Stop taking connections, then finish those open (``Clients.finish``)."""
        self.close()
        await self._clients.finish(timeout)

    def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for listener in self._shared:
            listener.close()
        if self._hand_over is not None:
            self._hand_over.close()

    async def _serve_own(self, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            partial(ClientConnection, self._clients, port),
            self._host,
            port,
            reuse_address=True,
            ssl=self._tls,
        )

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, _ = await loop.sock_accept(listener)
            except OSError as error:
                log.warning("accepting a client failed: %s", error)
                await asyncio.sleep(_ACCEPT_PAUSE)
                continue
            if self._hand_over is not None and self._hand_over.pass_on(connection):
                connection.close()  # the leader's process has it now
            else:
                self.serve_shared(connection)

    async def _adopt(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        port = self._ports.shared
        assert port is not None
        try:
            await loop.connect_accepted_socket(
                partial(ClientConnection, self._clients, port), connection, ssl=self._tls
            )
        except (OSError, ssl.SSLError) as error:  # gone, or a failed TLS handshake
            log.debug("a client of the shared port went before it was served: %s", error)
            with contextlib.suppress(OSError):
                connection.close()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _listen_shared(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host``, shared with the other nodes."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            listener = socket.socket(family, kind, proto)
            sockets.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio does: [::] must not take 0.0.0.0 too
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
    except OSError:
        for listener in sockets:
            listener.close()
        raise
    return sockets


async def serve_clients(
    commands: ClientCommands,
    host: str,
    ports: ClientPorts,
    max_line: int,
    access: ClientAccess,
    limits: ClientLimits,
    metrics: NodeMetrics,
    tls: ssl.SSLContext | None = None,
) -> ClientListeners:
    """Listen on the node's own client port, which no other process may share, and on the
    port shared by every node of the host. Both share one budget of SET bytes in flight, and
    the limits of what clients may take; with ``tls`` both speak TLS only. A member passes the
    shared port's new connections to the leader's process when it runs on this host. Raises
    ConfigError when a port cannot be had."""
    clients = Clients(
        commands,
        max_line,
        access,
        limits,
        ClientSlots(fit_open_files(limits.max_clients)),
        PartialLines(limits.partial_line_budget),
        metrics,
    )
    warning = access.exposure_warning(host)
    if warning is not None:
        log.warning(warning)
    listeners = ClientListeners(clients, ports, host, tls)
    hand_over = None
    if ports.shared is not None:
        shared, leadership = ports.shared, commands.leadership

        def leaders_desk() -> bytes | None:
            leader = leadership.leader_address
            if leadership.local is not None or leader is None:
                return None
            return desk_address(host, shared, leader)

        hand_over = HandOver(leaders_desk)
    await listeners.open(hand_over)
    return listeners
