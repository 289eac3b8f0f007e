"""The client ports: requests in, one reply per request out, in order.

Every node serves clients alike: SETs and GETs go to ClientCommands, which carries them out
here while this node leads and forwards them to the leader otherwise. Text lines and RESP
arrays may share a connection; each reply is encoded in the protocol of its request. An
``asyncio.Protocol`` rather than streams: every complete request in a received chunk is
started at once (pipelining without a round trip per command), and replies that are ready
together leave in one write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import cast

from kayit import __version__
from kayit.config import ClientPorts, ConfigError
from kayit.protocol import (
    BrokenResp,
    ErrorCode,
    InvalidCommand,
    OverlongLine,
    RequestFramer,
    RespArray,
    SetCommand,
    encode_error,
    parse_command,
    resp,
)
from kayit.protocol.resp import ServerCommand, parse_resp_command
from kayit.server.forwarding import ClientCommands
from kayit.server.outcome import RESP, TEXT, DataCommand, ReplyStyle

# Commands of one connection that may be under way at once before it stops being read.
MAX_PENDING = 1024
# Bytes of SET messages under way across all connections before they all stop being read.
SET_BYTES_IN_FLIGHT = 64 * 1024 * 1024


class InflightBudget:
    """Bytes of SET messages accepted but not yet answered, across every connection.

    Past the limit, connections pause reading until half of it is free again, so memory stays
    flat when clients send faster than the cluster stores.
    """

    def __init__(self, limit: int = SET_BYTES_IN_FLIGHT) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: set[ClientConnection] = set()

    @property
    def exhausted(self) -> bool:
        return self.used > self.limit

    def take(self, size: int) -> None:
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        if self._waiting and self.used <= self.limit // 2:
            waiting, self._waiting = self._waiting, set()
            for connection in waiting:
                connection.budget_freed()

    def wait(self, connection: ClientConnection) -> None:
        self._waiting.add(connection)


class ClientConnection(asyncio.Protocol):
    def __init__(
        self, commands: ClientCommands, max_line: int, client_port: int, budget: InflightBudget
    ) -> None:
        self._commands = commands
        self._budget = budget
        self._client_port = client_port
        self._framer = RequestFramer(max_line)
        self._replies: deque[bytes | asyncio.Task[bytes]] = deque()
        self._transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._flush_scheduled = False
        self._closing = False  # QUIT or broken RESP: close once every reply is out
        self._last_on_id: dict[str, asyncio.Task[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not always an asyncio.Transport subclass (uvloop's is not).
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        # Commands under way still finish: a SET already sent to members must settle.
        self._transport = None

    def data_received(self, data: bytes) -> None:
        for request in self._framer.feed(data):
            if self._closing:
                break
            self._replies.append(self._start(request))
        self._flush()
        if len(self._replies) >= MAX_PENDING:
            self._pause_reading()
        if self._budget.exhausted:
            self._pause_reading()
            self._budget.wait(self)

    def budget_freed(self) -> None:
        self._maybe_resume_reading()

    def eof_received(self) -> bool:
        self._closing = True
        self._flush()
        return True  # keep the write side open for the replies still to come

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._maybe_resume_reading()

    def _start(
        self, request: bytes | RespArray | OverlongLine | BrokenResp
    ) -> bytes | asyncio.Task[bytes]:
        if isinstance(request, OverlongLine):
            return encode_error(
                ErrorCode.BADREQUEST, f"line longer than {request.limit} bytes; discarded"
            )
        if isinstance(request, BrokenResp):
            self._closing = True
            return resp.error(f"Protocol error: {request.reason}")
        if isinstance(request, RespArray):
            style = RESP
            command = parse_resp_command(request.args)
        else:
            style = TEXT
            command = parse_command(request)
        if isinstance(command, InvalidCommand):
            return style.error(ErrorCode.BADREQUEST, command.reason)
        if isinstance(command, ServerCommand):
            return self._serve(command)
        return self._start_data(command, style)

    def _start_data(self, command: DataCommand, style: ReplyStyle) -> asyncio.Task[bytes]:
        # Commands of this connection on one id run one after another, in the order sent, so
        # a pipelined GET sees the SETs before it and none after; other ids go on meanwhile.
        earlier = self._last_on_id.get(command.id)
        task = asyncio.create_task(self._execute(command, style, earlier))
        self._last_on_id[command.id] = task
        task.add_done_callback(partial(self._settled, command.id))
        task.add_done_callback(self._schedule_flush)
        if isinstance(command, SetCommand):
            size = len(command.message)
            self._budget.take(size)
            task.add_done_callback(lambda _task: self._budget.give(size))
        return task

    def _settled(self, message_id: str, task: asyncio.Task[bytes]) -> None:
        if self._last_on_id.get(message_id) is task:
            del self._last_on_id[message_id]

    async def _execute(
        self, command: DataCommand, style: ReplyStyle, earlier: asyncio.Task[bytes] | None
    ) -> bytes:
        if earlier is not None:
            await asyncio.wait([earlier])
        return style.render(await self._commands.execute(command))

    def _serve(self, command: ServerCommand) -> bytes | asyncio.Task[bytes]:
        """The commands Redis clients send besides SET and GET; all but DBSIZE (which the
        leader answers) answered at once."""
        name, args = command.name, command.args
        if name == "PING":
            return resp.bulk(args[0]) if args else resp.simple("PONG")
        if name == "ECHO":
            return resp.bulk(args[0])
        if name == "QUIT":
            self._closing = True
            return resp.OK
        if name == "DBSIZE":
            task = asyncio.create_task(self._dbsize())
            task.add_done_callback(self._schedule_flush)
            return task
        if name == "INFO":
            return resp.bulk(self._info())
        if name == "CONFIG" and args[0].upper() != b"GET":
            return resp.error("CONFIG supports only GET here")
        if name in ("COMMAND", "CONFIG"):
            return resp.EMPTY_ARRAY  # nothing to describe: clients then use their defaults
        if name == "SELECT" and args[0] != b"0":
            return resp.error("DB index is out of range")
        if name == "HELLO":
            return self._hello(args)
        return resp.OK  # CLIENT SETNAME/SETINFO, SELECT 0

    def _hello(self, args: list[bytes]) -> bytes:
        if args and args[0] != b"2":
            # As Redis answers a version it does not speak; clients such as redis-py 8
            # (RESP3 by default) then need protocol=2.
            return resp.error("this server speaks RESP2 only", kind="NOPROTO")
        fields = [
            (b"server", resp.bulk(b"kayit")),
            (b"version", resp.bulk(__version__.encode())),
            (b"proto", resp.integer(2)),
            (b"mode", resp.bulk(b"cluster")),
        ]
        return resp.array([part for key, value in fields for part in (resp.bulk(key), value)])

    async def _dbsize(self) -> bytes:
        count = await self._commands.count()
        return resp.integer(count) if isinstance(count, int) else RESP.render(count)

    def _info(self) -> bytes:
        leadership = self._commands.leadership
        leader = leadership.local
        lines = [
            "# Server",
            f"kayit_version:{__version__}",
            # Redis's words: a node that does not lead forwards SETs and GETs to the one that does.
            f"role:{'slave' if leader is None else 'master'}",
            f"tcp_port:{self._client_port}",
            f"node:{leadership.address}",
            "",
            "# Cluster",
        ]
        if leader is None:
            lines.append(f"leader:{leadership.leader_address or 'unknown'}")
        else:
            members = leader.member_counts()
            lines += [
                f"leader:{leadership.address}",
                f"tolerance:{leader.tolerance}",
                f"term:{leader.term}",
                f"members:{len(members)}",
                f"members_alive:{sum(1 for m in members if m.alive)}",
                "",
                "# Keyspace",
                f"db0:keys={leader.message_count},expires=0,avg_ttl=0",
            ]
        return "\r\n".join(lines).encode() + b"\r\n"

    def _schedule_flush(self, _task: asyncio.Task[bytes]) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write every reply at the head of the queue that is ready, in one write."""
        self._flush_scheduled = False
        ready: list[bytes] = []
        while self._replies:
            head = self._replies[0]
            if isinstance(head, asyncio.Task):
                if not head.done():
                    break
                head = head.result()
            ready.append(head)
            self._replies.popleft()
        if self._transport is None:
            return
        if ready:
            self._transport.write(b"".join(ready))
        if self._closing and not self._replies:
            self._transport.close()
            return
        self._maybe_resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._reading_paused
            and not self._writing_paused
            and len(self._replies) < MAX_PENDING // 2
            and not self._budget.exhausted
            and self._transport is not None
        ):
            self._reading_paused = False
            self._transport.resume_reading()


async def serve_clients(
    commands: ClientCommands, host: str, ports: ClientPorts, max_line: int
) -> list[asyncio.Server]:
    """Listen on the node's own client port, which no other process may share, and on the
    port shared by every node of the host (SO_REUSEPORT: the kernel spreads new connections
    over the nodes listening, so clients of it are served while any of them lives). Both
    share one budget of SET bytes in flight. Raises ConfigError when a port cannot be had."""
    loop = asyncio.get_running_loop()
    budget = InflightBudget()
    servers: list[asyncio.Server] = []

    async def listen(port: int, shared: bool) -> None:
        def connection() -> ClientConnection:
            return ClientConnection(commands, max_line, port, budget)

        try:
            server = await loop.create_server(
                connection, host, port, reuse_address=True, reuse_port=shared
            )
        except OSError as error:
            for opened in servers:
                opened.close()
            what = "open client port" if port == ports.own else "share client port"
            raise ConfigError(f"cannot {what} {host}:{port}: {error}") from error
        servers.append(server)

    await listen(ports.own, shared=ports.own == ports.shared)
    if ports.shared is not None and ports.shared != ports.own:
        await listen(ports.shared, shared=True)
    return servers
