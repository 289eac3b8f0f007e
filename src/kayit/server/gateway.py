"""The client port: text commands in, one reply line out per command, in order.

An ``asyncio.Protocol`` rather than streams: every complete command in a received chunk is
started at once (pipelining without a round trip per command), and replies that are ready
together leave in one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from kayit.cluster.leader import ClusterError, Leader
from kayit.protocol import (
    NOT_FOUND,
    OK,
    GetCommand,
    InvalidCommand,
    LineFramer,
    OverlongLine,
    SetCommand,
    encode_error,
    encode_value,
    parse_command,
)

log = logging.getLogger(__name__)

# Commands of one connection that may be under way at once before it stops being read.
MAX_PENDING = 1024


class ClientConnection(asyncio.Protocol):
    def __init__(self, leader: Leader, max_line: int) -> None:
        self._leader = leader
        self._framer = LineFramer(max_line)
        self._replies: deque[bytes | asyncio.Task[bytes]] = deque()
        self._transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._flush_scheduled = False
        self._client_done = False  # the client half-closed: close once every reply is out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        # Commands under way still finish: a SET already sent to members must settle.
        self._transport = None

    def data_received(self, data: bytes) -> None:
        for line in self._framer.feed(data):
            self._replies.append(self._start(line))
        self._flush()
        if len(self._replies) >= MAX_PENDING:
            self._pause_reading()

    def eof_received(self) -> bool:
        self._client_done = True
        self._flush()
        return True  # keep the write side open for the replies still to come

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._maybe_resume_reading()

    def _start(self, line: bytes | OverlongLine) -> bytes | asyncio.Task[bytes]:
        if isinstance(line, OverlongLine):
            return encode_error(f"line longer than {line.limit} bytes; discarded")
        command = parse_command(line)
        if isinstance(command, InvalidCommand):
            return encode_error(command.reason)
        task = asyncio.create_task(self._execute(command))
        task.add_done_callback(self._schedule_flush)
        return task

    async def _execute(self, command: SetCommand | GetCommand) -> bytes:
        try:
            if isinstance(command, SetCommand):
                await self._leader.set(command.id, command.message)
                return OK
            message = await self._leader.get(command.id)
            return NOT_FOUND if message is None else encode_value(message)
        except ClusterError as error:
            return encode_error(str(error))
        except Exception:
            log.exception("command on %r failed", command.id)
            return encode_error("internal error; see the node's log")

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
        if self._client_done and not self._replies:
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
            and self._transport is not None
        ):
            self._reading_paused = False
            self._transport.resume_reading()


async def serve_clients(leader: Leader, host: str, port: int, max_line: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: ClientConnection(leader, max_line), host, port, reuse_address=True
    )
