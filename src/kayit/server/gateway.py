"""The client ports: requests in, one reply per request out, in order.

Every node serves clients alike: SETs, GETs, DELs and the other commands on the data go to
ClientCommands, which carries them out here while this node leads and forwards them to the
leader otherwise. Text lines and RESP arrays may share a connection; each reply is encoded in
the protocol of its request (RESP3 once the connection said ``HELLO 3``). An
``asyncio.Protocol`` rather than streams: every complete request in a received chunk is
started at once (pipelining without a round trip per command), and replies that are ready
together leave in one write. On the leader a GET whose value is in memory is answered as
it is read, without a task (``Leader.get_at_once``), in its turn among the replies.

What one client may cost is bounded (the limits are in ``kayit.config``): its unread replies
(``--client-output-limit``: past it, it is disconnected), the GETs it has running at once, its
commands under way (``MAX_PENDING``: past it, it is not read), its idle time (``--timeout``),
and, shared with every other client, the connections (``--max-clients``) and the bytes of
unfinished requests (``--partial-line-budget``, ``kayit.server.client_limits``). Before any of
that, ``kayit.server.access`` decides who may connect and whether it must AUTH first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from kayit import __version__
from kayit.config import ClientLimits
from kayit.metrics.instruments import NodeMetrics
from kayit.protocol import (
    BrokenResp,
    Command,
    ErrorCode,
    GetCommand,
    InvalidCommand,
    OverlongLine,
    RequestFramer,
    RespArray,
    SetCommand,
    encode_error,
    parse_command,
    resp,
)
from kayit.protocol.commands import (
    AuthCommand,
    DeleteCommand,
    ExistsCommand,
    InvalidAuth,
    KeyQuery,
)
from kayit.protocol.resp import (
    COMMAND_COUNT,
    ServerCommand,
    parse_hello,
    parse_resp_command,
    parse_scan,
)
from kayit.server.access import (
    DENIED_REASON,
    HELLO_NOAUTH_REASON,
    NO_PASSWORD_REASON,
    NOAUTH_REASON,
    WRONGPASS_REASON,
    ClientAccess,
)
from kayit.server.client_limits import ClientSlots, PartialLines
from kayit.server.forwarding import ClientCommands
from kayit.server.introspection import (
    ClientInfo,
    ClientStats,
    NodeFacts,
    client_line,
    info,
    sections_asked,
)
from kayit.server.outcome import (
    RESP,
    RESP3,
    TEXT,
    DataCommand,
    Failed,
    Found,
    Outcome,
    ReplyStyle,
    found_at_once,
    render_query,
)

log = logging.getLogger(__name__)

# Commands of one connection that may be under way at once before it stops being read.
MAX_PENDING = 1024
# GETs of one connection that may run at once; the rest wait their turn. Each may bring back
# a message of up to --max-line bytes, all of it in memory before a byte of it is written.
GETS_RUNNING = 32
# Bytes of replies ready at once within one read of requests (GETs answered from memory) that
# are written out, and weighed against the output limit, before the next request is read.
WRITE_EVERY = 256 * 1024
# Commands a client may send before it has authenticated: the rest are answered NOAUTH.
_BEFORE_AUTH = ("HELLO", "QUIT")
# Bytes of SET messages under way across all connections before they all stop being read.
SET_BYTES_IN_FLIGHT = 64 * 1024 * 1024
MULTI_REFUSED = (
    "MULTI is not supported: kayit carries out each command on its own; every command up to "
    "EXEC or DISCARD is refused, so none of them is carried out"
)
IN_MULTI_REASON = "refused after MULTI (not supported); EXEC or DISCARD ends the transaction"


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


@dataclass(slots=True)
class Clients:
    """What every client connection of a node shares."""

    commands: ClientCommands
    max_line: int
    access: ClientAccess
    limits: ClientLimits
    slots: ClientSlots
    partial: PartialLines
    metrics: NodeMetrics
    budget: InflightBudget = field(default_factory=InflightBudget)
    denial_logged: bool = False
    stats: ClientStats = field(default_factory=ClientStats)
    # The connections served, by their CLIENT ID.
    connections: dict[int, ClientConnection] = field(default_factory=dict)
    last_id: int = 0

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    async def finish(self, timeout: float) -> None:
        """The node stops: every connection reads nothing more, gets the replies to what it
        sent (commands under way go on, forwarded to the leader) and is closed, within
        ``timeout`` seconds; a client then reconnects to a node that lives, knowing the outcome
        of every command it sent."""
        for connection in list(self.connections.values()):
            connection.finish()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def log_denial(self, peer: str) -> None:
        """Say once why clients from other hosts are refused: the operator may not know."""
        if not self.denial_logged:
            self.denial_logged = True
            log.warning(
                "refused a client from %s: protected mode (no --requirepass; only loopback "
                "clients are served); set --requirepass-file FILE or --insecure. Later "
                "refusals are not logged",
                peer,
            )


class ClientConnection(asyncio.Protocol):
    def __init__(self, clients: Clients, client_port: int) -> None:
        self._clients = clients
        self._commands = clients.commands
        self._budget = clients.budget
        self._client_port = client_port
        self._framer = RequestFramer(clients.max_line)
        self._partial_held = 0  # bytes of it counted in clients.partial
        self._replies: deque[bytes | asyncio.Task[bytes]] = deque()
        self._unwritten = 0  # bytes of the replies in _replies that are ready
        self._ready: set[asyncio.Task[bytes]] = set()  # tasks of _replies counted in _unwritten
        self._gets = asyncio.Semaphore(GETS_RUNNING)
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._counted = False  # holds one of clients.slots
        self._authenticated = not clients.access.requires_auth
        self._in_multi = False  # after a MULTI, until EXEC or DISCARD: every command refused
        # Whether a request must be looked at before it is carried out: before AUTH, or after
        # MULTI. One test of it is all the other requests pay.
        self._restricted = not self._authenticated
        self._protocol = 2  # of RESP replies: 3 after HELLO 3
        self._resp = RESP
        self.id = clients.next_id()
        self._name = b""
        self._library = {b"LIB-NAME": b"", b"LIB-VER": b""}
        self._connected_at = time.monotonic()
        self._active_at = self._connected_at
        self._reading_paused = False
        self._writing_paused = False
        self._flush_scheduled = False
        self._closing = False  # QUIT, broken RESP or a refusal: close once every reply is out
        self._finishing = False  # the node stops: end the stream once every reply is out
        self._discarding = False  # ended: what the client still sends is dropped
        self._last_on_id: dict[str, asyncio.Task[bytes]] = {}
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not always an asyncio.Transport subclass (uvloop's is not).
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else ""
        if host:
            self._peer = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
        clients = self._clients
        clients.stats.connections_received += 1
        if not clients.access.admits(host):
            clients.log_denial(self._peer)
            clients.stats.rejected += 1
            self._refuse(encode_error(ErrorCode.DENIED, DENIED_REASON))
        elif not clients.slots.take():
            clients.stats.rejected += 1
            self._refuse(encode_error(ErrorCode.LIMIT, "max number of clients reached"))
        else:
            self._counted = True
            clients.metrics.connections.inc()
            clients.metrics.connections_open.inc()
            clients.connections[self.id] = self
            if clients.limits.timeout:
                self._idle_since = asyncio.get_running_loop().time()
                self._watch_idle(self._idle_since + clients.limits.timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def _forget(self) -> None:
        """The client is gone. Commands under way still finish: a SET already sent to members
        must settle. GETs not yet running never run, and replies that are ready go at once:
        no one will read them."""
        self._transport = None
        if self._counted:
            self._counted = False
            self._clients.slots.give()
            self._clients.metrics.connections_open.dec()
            del self._clients.connections[self.id]
        self._drop_partial()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._replies = deque(
            reply for reply in self._replies if isinstance(reply, asyncio.Task) and not reply.done()
        )
        self._ready.clear()
        self._unwritten = 0

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._clients.metrics.bytes_in.inc(len(data))
        if self._clients.limits.timeout:
            self._idle_since = asyncio.get_running_loop().time()
        self._active_at = time.monotonic()
        requests = self._framer.feed(data)
        stats = self._clients.stats
        stats.bytes_in += len(data)
        stats.commands += len(requests)
        for request in requests:
            if self._closing or self._transport is None:
                break
            self._queue(self._start(request))
            if self._unwritten > WRITE_EVERY:
                # GETs answered at once pile up here: out with them, and past the output
                # limit a disconnection (the flush's), before the next request is read.
                self._flush()
        if self._transport is None:
            return  # disconnected for its output: nothing more is read or held
        if self._closing:
            self._framer.abandon()  # nothing more is read: hold nothing more
            self._pause_reading()
        self._flush()
        pending = self._framer.pending_bytes
        if pending != self._partial_held:
            self._partial_held = pending
            self._clients.partial.hold(self, pending)  # may refuse this or another connection
        if len(self._replies) >= MAX_PENDING:
            self._pause_reading()
        if self._budget.exhausted:
            self._pause_reading()
            self._budget.wait(self)

    def refuse_partial(self, held: int) -> None:
        """The node's bytes of unfinished requests passed --partial-line-budget, and this
        connection held the most of them: answer ERROR LIMIT after its earlier replies, and
        close."""
        style = RESP if self._framer.pending_resp else TEXT
        self._framer.abandon()
        self._partial_held = 0
        log.warning(
            "client %s refused: its unfinished request of %d bytes was the largest when the "
            "unfinished requests of all clients passed --partial-line-budget (%d bytes)",
            self._peer,
            held,
            self._clients.partial.budget,
        )
        self._queue(
            style.error(
                ErrorCode.LIMIT,
                "unfinished requests of all clients take too much memory, and this "
                f"connection's ({held} bytes) the most; closing",
            )
        )
        self._closing = True
        self._pause_reading()
        self._flush()

    def finish(self) -> None:
        """Carry out nothing more; once every reply is out, end the connection
        (``Clients.finish``)."""
        if self._transport is None:
            return
        self._closing = self._finishing = True
        self._drop_partial()  # its end will never be read
        self._pause_reading()
        self._flush()

    def _end(self) -> None:
        """Every reply is out. A node that stops sends its end of the stream and reads (and
        drops) what the client still sends until it closes too: closing with unread requests
        would reset the connection, and the client could lose replies it has not read yet."""
        assert self._transport is not None
        if not (self._finishing and self._transport.can_write_eof()):
            self._transport.close()
            return
        self._transport.write_eof()
        self._discarding = True
        self._transport.resume_reading()

    def budget_freed(self) -> None:
        self._maybe_resume_reading()

    def eof_received(self) -> bool:
        if self._discarding:
            return False  # both ends are done: the transport closes
        self._closing = True
        self._drop_partial()  # its end will never come
        self._flush()
        return True  # keep the write side open for the replies still to come

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._maybe_resume_reading()

    def _refuse(self, line: bytes) -> None:
        """One line, and close, before any request is read."""
        assert self._transport is not None
        self._closing = True
        self._framer.abandon()
        self._transport.write(line)
        self._clients.metrics.bytes_out.inc(len(line))
        self._transport.close()

    def _drop_partial(self) -> None:
        self._framer.abandon()
        if self._partial_held:
            self._partial_held = 0
            self._clients.partial.release(self)

    def _queue(self, reply: bytes | asyncio.Task[bytes]) -> None:
        if isinstance(reply, bytes):
            self._unwritten += len(reply)
        self._replies.append(reply)

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
        command: Command | ServerCommand
        if isinstance(request, RespArray):
            style = self._resp
            command = parse_resp_command(request.args)
        else:
            style = TEXT
            command = parse_command(request)
        metrics = self._clients.metrics
        if self._restricted:
            refusal = self._refusal(command, style)
            if refusal is not None:
                return refusal
        if isinstance(command, SetCommand | GetCommand):
            return self._start_data(command, style)
        if isinstance(command, InvalidCommand):
            metrics.invalid.inc()
            return style.error(ErrorCode.BADREQUEST, command.reason)
        if isinstance(command, AuthCommand):
            return self._auth(command, style)
        metrics.other.inc()
        if isinstance(command, KeyQuery):
            return self._start_query(command, style)
        return self._serve(command)

    def _refusal(self, command: Command | ServerCommand, style: ReplyStyle) -> bytes | None:
        """The answer to a command refused before AUTH or after MULTI; None if it may run."""
        if not self._authenticated:
            if _allowed_before_auth(command):
                return None
            self._clients.metrics.unauthenticated.inc()
            return style.error(ErrorCode.NOAUTH, NOAUTH_REASON)
        name = command.name if isinstance(command, ServerCommand) else None
        if name == "QUIT":
            return None
        if name == "EXEC":
            self._end_multi()
            return resp.error("Transaction discarded because of previous errors.", "EXECABORT")
        if name == "DISCARD":
            self._end_multi()
            return resp.OK
        return style.error(ErrorCode.BADREQUEST, IN_MULTI_REASON)

    def _end_multi(self) -> None:
        self._in_multi = False
        self._restricted = not self._authenticated

    def _auth(self, command: AuthCommand, style: ReplyStyle) -> bytes:
        """AUTH, as Redis answers it. A failed AUTH leaves an authenticated connection so."""
        access = self._clients.access
        if not access.requires_auth and command.username is None:
            self._clients.metrics.invalid.inc()
            return style.error(ErrorCode.BADREQUEST, NO_PASSWORD_REASON)
        if not access.accepts(command):
            self._clients.metrics.auth_failed.inc()
            return style.error(ErrorCode.WRONGPASS, WRONGPASS_REASON)
        self._clients.metrics.auth_ok.inc()
        self._authenticate()
        return style.ok

    def _authenticate(self) -> None:
        self._authenticated = True
        self._restricted = self._in_multi

    def _start_data(self, command: DataCommand, style: ReplyStyle) -> bytes | asyncio.Task[bytes]:
        # Commands of this connection on one id run one after another, in the order sent, so
        # a pipelined GET sees the SETs before it and none after; other ids go on meanwhile.
        earlier = self._last_on_id.get(command.id)
        if earlier is None and isinstance(command, GetCommand):
            reply = self._get_at_once(command, style)
            if reply is not None:
                return reply
        task = asyncio.create_task(self._execute(command, style, earlier))
        self._last_on_id[command.id] = task
        task.add_done_callback(partial(self._settled, command.id))
        task.add_done_callback(self._reply_ready)
        if isinstance(command, SetCommand):
            size = len(command.message)
            self._budget.take(size)
            task.add_done_callback(lambda _task: self._budget.give(size))
        return task

    def _get_at_once(self, command: GetCommand, style: ReplyStyle) -> bytes | None:
        """The reply to a GET when this node leads and can answer it from memory, here and
        now, without a task (``Leader.get_at_once``); None when it must wait its turn. No
        earlier command of this connection on the id is under way, so it sees them all."""
        leader = self._commands.leadership.local
        if leader is None:
            return None
        started = time.perf_counter()
        outcome = found_at_once(leader, command.id)
        if outcome is None:
            return None
        self._clients.metrics.gets.record(outcome, time.perf_counter() - started)
        return style.render(outcome)

    def _start_query(self, query: KeyQuery, style: ReplyStyle) -> bytes | asyncio.Task[bytes]:
        """MGET, EXISTS, STRLEN, TYPE and DEL: a GET, EXISTS or DEL of each id, in order
        after this connection's earlier commands on the same ids, as a GET is."""
        if query.name in ("MGET", "STRLEN") and not any(i in self._last_on_id for i in query.ids):
            reply = self._read_at_once(query, style)
            if reply is not None:
                return reply
        per_id: list[DataCommand]
        if query.name in ("MGET", "STRLEN"):
            per_id = [GetCommand(message_id) for message_id in query.ids]
        elif query.name == "DEL":  # a key named twice is deleted once, as in Redis
            per_id = [DeleteCommand(message_id) for message_id in dict.fromkeys(query.ids)]
        else:
            per_id = [ExistsCommand(message_id) for message_id in query.ids]
        earlier = {self._last_on_id[i] for i in query.ids if i in self._last_on_id}
        task = asyncio.create_task(self._query(query, per_id, style, earlier))
        for message_id in query.ids:
            self._last_on_id[message_id] = task
            task.add_done_callback(partial(self._settled, message_id))
        task.add_done_callback(self._reply_ready)
        return task

    def _read_at_once(self, query: KeyQuery, style: ReplyStyle) -> bytes | None:
        """The reply to an MGET or STRLEN when this node leads and has every value in memory
        (``_get_at_once``, id by id), within the output limit; None when it must wait."""
        leader = self._commands.leadership.local
        if leader is None:
            return None
        started = time.perf_counter()
        outcomes: list[Outcome] = []
        for message_id in query.ids:
            outcome = found_at_once(leader, message_id)
            if outcome is None:
                return None
            outcomes.append(outcome)
        size = sum(len(o.message) for o in outcomes if isinstance(o, Found))
        if size > self._clients.limits.output_limit:
            return None  # the task's way says why
        seconds = (time.perf_counter() - started) / len(outcomes)
        for outcome in outcomes:
            self._clients.metrics.gets.record(outcome, seconds)
        return render_query(query, outcomes, style)

    async def _query(
        self,
        query: KeyQuery,
        per_id: list[DataCommand],
        style: ReplyStyle,
        earlier: set[asyncio.Task[bytes]],
    ) -> bytes:
        if earlier:
            await asyncio.wait(earlier)
        outcomes: list[Outcome] = []
        size = 0
        # GETS_RUNNING at a time, and no further once the values read would pass the output
        # limit: this client would be disconnected for a reply that large anyway.
        for start in range(0, len(per_id), GETS_RUNNING):
            if self._transport is None:
                return b""
            async with self._gets:
                chunk = per_id[start : start + GETS_RUNNING]
                outcomes += await asyncio.gather(*map(self._measured, chunk))
            size += sum(len(o.message) for o in outcomes[-len(chunk) :] if isinstance(o, Found))
            if size > self._clients.limits.output_limit:
                return style.error(
                    ErrorCode.LIMIT,
                    f"the values of this {query.name} pass --client-output-limit "
                    f"({self._clients.limits.output_limit} bytes)",
                )
        return render_query(query, outcomes, style)

    def _settled(self, message_id: str, task: asyncio.Task[bytes]) -> None:
        if self._last_on_id.get(message_id) is task:
            del self._last_on_id[message_id]

    async def _execute(
        self, command: DataCommand, style: ReplyStyle, earlier: asyncio.Task[bytes] | None
    ) -> bytes:
        if earlier is not None:
            await asyncio.wait([earlier])
        if not isinstance(command, GetCommand):
            return style.render(await self._measured(command))
        async with self._gets:
            if self._transport is None:
                return b""  # the client is gone: no one would read the message
            return style.render(await self._measured(command))

    async def _measured(self, command: DataCommand) -> Outcome:
        """Carry out one command on an id, counted by kind and result in the metrics."""
        started = time.perf_counter()
        outcome = await self._commands.execute(command)
        self._clients.metrics.meter(command).record(outcome, time.perf_counter() - started)
        return outcome

    def _serve(self, command: ServerCommand) -> bytes | asyncio.Task[bytes]:
        """The RESP commands besides the reads and writes of ids. Those about the whole
        keyspace (DBSIZE, KEYS, SCAN, INFO's keyspace) ask the leader, after this connection's
        commands before them; the others are answered at once."""
        name, args = command.name, command.args
        if name == "PING":
            return resp.bulk(args[0]) if args else resp.simple("PONG")
        if name == "ECHO":
            return resp.bulk(args[0])
        if name == "QUIT":
            self._closing = True
            return resp.OK
        if name == "DBSIZE":
            return self._after_earlier(self._dbsize())
        if name == "KEYS":
            return self._after_earlier(self._keys(None if args[0] == b"*" else args[0]))
        if name == "SCAN":
            return self._scan(args)
        if name == "INFO":
            return self._after_earlier(self._info(sections_asked(args)))
        if name == "CLIENT":
            return self._client(args)
        if name == "MULTI":
            self._in_multi = self._restricted = True
            return resp.error(MULTI_REFUSED)
        if name in ("EXEC", "DISCARD"):
            return resp.error(f"{name} without MULTI")
        if name == "CONFIG" and args[0].upper() != b"GET":
            return resp.error("CONFIG supports only GET here")
        if name == "CONFIG":  # nothing to tell: clients then use their defaults
            return resp.EMPTY_MAP if self._protocol == 3 else resp.EMPTY_ARRAY
        if name == "COMMAND" and args and args[0].upper() == b"COUNT":
            return resp.integer(COMMAND_COUNT)
        if name == "COMMAND":
            return resp.EMPTY_ARRAY  # no command described: clients then use their defaults
        if name == "SELECT" and args[0] != b"0":
            return resp.error("DB index is out of range")
        if name == "HELLO":
            return self._hello(args)
        return resp.OK  # SELECT 0

    def _after_earlier(self, reply: Awaitable[bytes]) -> asyncio.Task[bytes]:
        """``reply`` once every command this connection sent before has been carried out, so
        a KEYS or DBSIZE sees the SETs pipelined before it."""
        earlier = set(self._last_on_id.values())

        async def in_turn() -> bytes:
            if earlier:
                await asyncio.wait(earlier)
            return await reply

        task = asyncio.create_task(in_turn())
        task.add_done_callback(self._reply_ready)
        return task

    def _hello(self, args: list[bytes]) -> bytes:
        hello = parse_hello(args)
        if isinstance(hello, bytes):
            return hello
        if hello.name is not None and not _valid_name(hello.name):
            return resp.error(_BAD_NAME)
        if hello.auth is not None:
            if not self._clients.access.accepts(hello.auth):
                return resp.error(WRONGPASS_REASON, kind=ErrorCode.WRONGPASS.value)
            self._authenticate()
        if not self._authenticated:
            return resp.error(HELLO_NOAUTH_REASON, kind=ErrorCode.NOAUTH.value)
        if hello.protocol is not None:
            self._protocol = hello.protocol
            self._resp = RESP3 if hello.protocol == 3 else RESP
        if hello.name is not None:
            self._name = hello.name
        leader = self._commands.leadership.local
        fields = [
            (b"server", resp.bulk(b"kayit")),
            (b"version", resp.bulk(__version__.encode())),
            (b"proto", resp.integer(self._protocol)),
            (b"id", resp.integer(self.id)),
            (b"mode", resp.bulk(b"cluster")),
            (b"role", resp.bulk(b"replica" if leader is None else b"master")),
            (b"modules", resp.EMPTY_ARRAY),
        ]
        return resp.mapping(fields, self._protocol)

    def _client(self, args: list[bytes]) -> bytes:
        """CLIENT ID, GETNAME, SETNAME, LIST, INFO and SETINFO as Redis answers them; the
        other subcommands answer +OK and do nothing."""
        sub, rest = args[0].upper(), args[1:]
        if sub == b"ID" and not rest:
            return resp.integer(self.id)
        if sub == b"GETNAME" and not rest:
            return resp.bulk(self._name) if self._name else resp.null(self._protocol)
        if sub == b"SETNAME" and len(rest) == 1:
            if not _valid_name(rest[0]):
                return resp.error(_BAD_NAME)
            self._name = rest[0]
            return resp.OK
        if sub == b"INFO" and not rest:
            return resp.bulk(client_line(self.describe()).encode() + b"\n")
        if sub == b"LIST":
            return self._client_list(rest)
        if sub == b"SETINFO" and len(rest) == 2 and rest[0].upper() in self._library:
            if not _valid_name(rest[1]):
                return resp.error(_BAD_NAME)
            self._library[rest[0].upper()] = rest[1]
            return resp.OK
        if sub in (b"ID", b"GETNAME", b"SETNAME", b"INFO", b"SETINFO"):
            return resp.error(f"wrong number of arguments for 'client|{sub.lower().decode()}'")
        return resp.OK

    def _client_list(self, options: list[bytes]) -> bytes:
        """``CLIENT LIST [TYPE normal] [ID id ...]``: every client is of the normal type."""
        connections = list(self._clients.connections.values())
        if len(options) == 2 and options[0].upper() == b"TYPE":
            if options[1].lower() != b"normal":
                connections = []
        elif options and options[0].upper() == b"ID" and len(options) > 1:
            if not all(option.isdigit() for option in options[1:]):
                return resp.error("Invalid client ID")
            wanted = {int(option) for option in options[1:]}
            connections = [c for c in connections if c.id in wanted]
        elif options:
            return resp.error("syntax error")
        lines = "".join(client_line(c.describe()) + "\n" for c in connections)
        return resp.bulk(lines.encode())

    def describe(self) -> ClientInfo:
        now = time.monotonic()
        transport = self._transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        sock = transport.get_extra_info("socket") if transport is not None else None
        return ClientInfo(
            id=self.id,
            addr=self._peer,
            laddr=f"{local[0]}:{local[1]}" if isinstance(local, tuple) else "?",
            fd=sock.fileno() if sock is not None else -1,
            name=self._name.decode(),
            age=int(now - self._connected_at),
            idle=int(now - self._active_at),
            in_multi=self._in_multi,
            protocol=self._protocol,
            lib_name=self._library[b"LIB-NAME"].decode(),
            lib_ver=self._library[b"LIB-VER"].decode(),
        )

    async def _dbsize(self) -> bytes:
        count = await self._commands.count()
        return resp.integer(count) if isinstance(count, int) else self._resp.render(count)

    async def _keys(self, pattern: bytes | None) -> bytes:
        found = await self._commands.keys(pattern)
        if isinstance(found, Failed):
            return self._resp.render(found)
        return resp.array([resp.bulk(message_id.encode()) for message_id in found])

    def _scan(self, args: list[bytes]) -> bytes | asyncio.Task[bytes]:
        scan = parse_scan(args)
        if isinstance(scan, bytes):
            return scan

        async def page() -> bytes:
            found = await self._commands.key_page(scan.cursor, scan.count, scan.pattern)
            if isinstance(found, Failed):
                return self._resp.render(found)
            ids = found.ids if scan.strings else []  # every id holds a string
            cursor = resp.bulk(str(found.cursor).encode())
            return resp.array([cursor, resp.array([resp.bulk(i.encode()) for i in ids])])

        return self._after_earlier(page())

    async def _info(self, sections: list[str]) -> bytes:
        keys: int | None = None
        if "keyspace" in sections:
            count = await self._commands.count()
            keys = count if isinstance(count, int) else None
        clients = self._clients
        leadership = self._commands.leadership
        facts = NodeFacts(
            client_port=self._client_port,
            address=leadership.address,
            leader=leadership.local,
            leader_address=leadership.leader_address,
            connected_clients=len(clients.connections),
            max_clients=clients.slots.limit,
            stats=clients.stats,
            keys=keys,
        )
        return resp.bulk(info(facts, sections))

    def _reply_ready(self, task: asyncio.Task[bytes]) -> None:
        if self._transport is None:
            return
        self._ready.add(task)
        if not task.cancelled() and task.exception() is None:
            self._unwritten += len(task.result())  # the flush weighs it against the limit
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write every reply at the head of the queue that is ready, in one write."""
        self._flush_scheduled = False
        ready: list[bytes] = []
        stopping = False
        while self._replies:
            head = self._replies[0]
            if isinstance(head, asyncio.Task):
                if head not in self._ready:  # not done, or not yet counted
                    break
                self._ready.discard(head)
                if head.cancelled():  # the node is stopping: no reply comes, nor any after
                    stopping = True
                    self._replies.clear()
                    break
                head = head.result()
            ready.append(head)
            self._replies.popleft()
        if self._transport is None:
            return
        if stopping:
            self._closing = True
        if ready:
            payload = b"".join(ready)
            self._unwritten -= len(payload)
            self._clients.stats.bytes_out += len(payload)
            self._transport.write(payload)
            self._clients.metrics.bytes_out.inc(len(payload))
        if self._output_exceeded():
            return
        if self._closing and not self._replies:
            self._end()
            return
        if not self._replies and self._clients.limits.timeout:
            self._idle_since = asyncio.get_running_loop().time()
        self._maybe_resume_reading()

    def _output_exceeded(self) -> bool:
        """Disconnect a client whose unread replies passed --client-output-limit: it does not
        read what it asked for, and the node must not hold it for ever (Redis's
        client-output-buffer-limit). No reply can tell it so: it reads none."""
        assert self._transport is not None
        unread = self._unwritten + self._transport.get_write_buffer_size()
        limit = self._clients.limits.output_limit
        if unread <= limit:
            return False
        log.warning(
            "client %s disconnected: %d bytes of replies it has not read passed "
            "--client-output-limit (%d bytes)",
            self._peer,
            unread,
            limit,
        )
        self._transport.abort()
        self._forget()  # now, not a loop turn later: the replies go at once
        return True

    def _watch_idle(self, when: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_at(when, self._idle_check)

    def _idle_check(self) -> None:
        """Close a connection that sent no request and had nothing under way for --timeout
        seconds, as Redis's timeout does."""
        self._idle_timer = None
        if self._transport is None:
            return
        timeout = self._clients.limits.timeout
        now = asyncio.get_running_loop().time()
        if self._replies:  # under way: idle at the earliest once its last reply is out
            self._watch_idle(now + timeout)
        elif now - self._idle_since >= timeout:
            log.debug("client %s closed: idle for %g s (--timeout)", self._peer, timeout)
            self._transport.abort()  # anything still unwritten is a reply it did not read
        else:
            self._watch_idle(self._idle_since + timeout)

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
            and not self._closing  # it reads nothing more
            and self._transport is not None
        ):
            self._reading_paused = False
            self._transport.resume_reading()


_BAD_NAME = "Client names cannot contain spaces, newlines or special characters."


def _valid_name(name: bytes) -> bool:
    """As Redis checks a client's name: printable ASCII without spaces."""
    return all(33 <= byte <= 126 for byte in name)


def _allowed_before_auth(command: Command | ServerCommand) -> bool:
    if isinstance(command, ServerCommand):
        return command.name in _BEFORE_AUTH
    return isinstance(command, AuthCommand | InvalidAuth)
