"""One run: every connection an ``asyncio.BufferedProtocol`` with one pipelined batch in flight.

A connection writes a batch, counts replies as chunks arrive (all replies in one chunk share
its arrival time), and writes its next batch as soon as the last reply of the current one is in,
so up to ``connections * pipeline`` requests are in flight, as in redis-benchmark.

Given several addresses (kayit nodes, any of which takes clients), connection n starts on
address n modulo their number. A connection that fails connects again, to the next address
that answers (its own last: a port shared by several nodes may still be served), and the
requests it had in flight count as errors; if none answers, the run ends. Given a password, a
connection sends AUTH first, each time it connects, and waits for OK before its requests.
"""

from __future__ import annotations

import asyncio
import random
from array import array
from collections import Counter
from time import perf_counter
from typing import TextIO, cast

from kayit.bench.settings import BenchSettings
from kayit.bench.stats import LOST, BenchResult, latency_of
from kayit.bench.wire import RequestPool, RespError, RespReplies, TextReplies

CONNECT_TIMEOUT = 10.0  # seconds for every connection to open
STALL_TIMEOUT = 30.0  # seconds without any reply while requests are in flight
PROGRESS_EVERY = 0.25
READ_BUFFER = 64 * 1024  # under glibc's mmap threshold: copies out of it stay on the heap


class BenchError(Exception):
    """Ends the run: a connection could not open, failed, closed or spoke nonsense."""


class _Run:
    """What the connections of one run share."""

    def __init__(self, settings: BenchSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.moving: set[asyncio.Task[None]] = set()  # connections moving to another address
        self.pool = RequestPool(settings)
        self.remaining = settings.requests
        self.deadline: float | None = None
        self.done = 0
        self.errors = 0
        self.reasons: Counter[str] = Counter()  # error replies by what they say, lost replies
        self.latencies = array("d")  # milliseconds, one per reply
        self.busy = settings.connections
        self.last_reply = 0.0
        self.finished: asyncio.Future[None] = loop.create_future()

    def take(self, want: int) -> int:
        """How many requests a connection may send now (0: it is finished)."""
        if self.deadline is not None:
            return want if perf_counter() < self.deadline else 0
        count = min(want, self.remaining)
        self.remaining -= count
        return count

    def idle(self) -> None:
        self.busy -= 1
        if self.busy == 0 and not self.finished.done():
            self.finished.set_result(None)

    def fail(self, message: str) -> None:
        if not self.finished.done():
            self.finished.set_exception(BenchError(message))


class _Connection(asyncio.BufferedProtocol):
    """Reads into its own buffer: ``recv_into`` needs no allocation per read, where plain
    ``Protocol`` reads cost an mmap, mremap and munmap each (asyncio asks ``recv`` for
    256 KiB), more system time than the send and the receive themselves."""

    def __init__(self, run: _Run, number: int, rng: random.Random) -> None:
        self._run = run
        self.number = number
        self.address = number % len(run.settings.addresses)  # index of the one it is on
        self._random = rng.random
        self._new_replies()
        self._record = run.latencies.append
        self._pipeline = run.settings.pipeline
        self.transport: asyncio.Transport | None = None
        self._expected = b""
        self._left = 0  # replies still to come for the batch in flight
        self._sent_at = 0.0
        self.busy = False
        self._buffer = memoryview(bytearray(READ_BUFFER))
        self._auth_reply: asyncio.Future[bytes] | None = None  # while AUTH awaits its reply
        self._auth_received = b""

    @property
    def where(self) -> str:
        return self._run.settings.where(self.address)

    def _new_replies(self) -> None:
        pool = self._run.pool
        reasons = self._run.reasons
        self._replies = (
            TextReplies(reasons) if pool.text else RespReplies(reasons, pool.value_reply)
        )
        self._feed = self._replies.feed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always an asyncio.Transport subclass (uvloop's).
        self.transport = cast(asyncio.Transport, transport)

    def start(self) -> None:
        self.busy = True
        self._send()

    def _send(self) -> None:
        run = self._run
        count = run.take(self._pipeline)
        if not count:
            self.busy = False
            run.idle()
            return
        payload, self._expected = run.pool.batch(self._random, count)
        self._left = count
        assert self.transport is not None
        self._sent_at = perf_counter()
        self.transport.write(payload)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._auth_reply is not None:
            self._auth_received += self._buffer[:nbytes].tobytes()
            line, newline, _ = self._auth_received.partition(b"\n")
            if newline and not self._auth_reply.done():
                self._auth_reply.set_result(line.rstrip(b"\r"))
            return
        try:
            count = self._feed(self._buffer[:nbytes].tobytes())
        except RespError as error:
            self._broken(f"sent a reply that is not RESP: {error}")
            return
        if not count:
            return
        now = perf_counter()
        run = self._run
        latency = (now - self._sent_at) * 1000.0
        if count == 1:
            self._record(latency)
        else:
            run.latencies.extend([latency] * count)
        run.done += count
        left = self._left - count
        self._left = left
        if left > 0:
            return
        if left < 0:
            self._broken(f"sent {-left} more replies than requests")
            return
        run.last_reply = now
        run.errors += self._replies.batch_errors(self._expected)
        self._send()

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost reports it if requests were still in flight

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._auth_reply is not None:  # still opening: open() fails, and its caller moves on
            if not self._auth_reply.done():
                self._auth_reply.set_exception(ConnectionError("closed before answering AUTH"))
            return
        if not self.busy:
            return
        run = self._run
        how = f"failed: {exc}" if exc else "was closed by the server"
        failure = (
            f"connection {self.number + 1} to {self.where} {how} (after {run.done} replies in all)"
        )
        # The replies still due are lost; those that came are checked as usual.
        lost = self._left
        received = self._expected[: len(self._expected) - lost]
        run.errors += self._replies.batch_errors(received) + lost
        if lost:
            run.reasons[LOST] += lost
        run.done += lost
        self._new_replies()
        moving = asyncio.get_running_loop().create_task(self._move_on(failure))
        run.moving.add(moving)
        moving.add_done_callback(run.moving.discard)

    async def open(self, index: int) -> None:
        """Connect to address ``index`` and stay on it. Raises OSError (TimeoutError too), or
        BenchError if the server refuses the password."""
        host, port = self._run.settings.addresses[index]
        loop = asyncio.get_running_loop()
        tls = self._run.settings.tls
        connecting = loop.create_connection(
            lambda: self, host, port, ssl=tls, server_hostname=host if tls else None
        )
        await asyncio.wait_for(connecting, CONNECT_TIMEOUT)
        self.address = index
        password = self._run.settings.password
        if password is not None:
            await asyncio.wait_for(self._authenticate(password), CONNECT_TIMEOUT)

    async def _authenticate(self, password: str) -> None:
        assert self.transport is not None
        self._auth_reply = asyncio.get_running_loop().create_future()
        self._auth_received = b""
        self.transport.write(self._run.pool.auth_request(password))
        try:
            reply = await self._auth_reply
        finally:
            self._auth_reply = None
        if self.transport is None:
            raise ConnectionError("closed after answering AUTH")
        if reply not in (b"OK", b"+OK"):
            shown = reply.decode("utf-8", "replace")
            raise BenchError(f"the server at {self.where} refused the password: {shown}")

    async def _move_on(self, failure: str) -> None:
        addresses = self._run.settings.addresses
        for step in range(1, len(addresses) + 1):
            try:
                await self.open((self.address + step) % len(addresses))
            except OSError:
                continue
            except BenchError as error:
                self.busy = False
                self._run.fail(str(error))
                return
            self._send()
            return
        self.busy = False
        self._run.fail(f"{failure}, and connecting again failed")

    def _broken(self, what: str) -> None:
        self._run.fail(f"the server at {self.where} {what} (connection {self.number + 1})")
        self.busy = False
        if self.transport is not None:
            self.transport.close()


async def run_bench(settings: BenchSettings, progress: TextIO | None = None) -> BenchResult:
    """Run the benchmark; raises BenchError when a connection cannot open or fails mid-run."""
    loop = asyncio.get_running_loop()
    run = _Run(settings, loop)
    seed = settings.seed if settings.seed is not None else random.randrange(2**63)
    connections = [
        _Connection(run, number, random.Random(f"{seed}:{number}"))
        for number in range(settings.connections)
    ]
    try:
        await _connect(connections, settings)
        start = perf_counter()
        if settings.duration is not None:
            run.deadline = start + settings.duration
        for connection in connections:
            connection.start()
        watch = asyncio.create_task(_watch(run, start, progress))
        try:
            await run.finished
        finally:
            watch.cancel()
            if progress is not None:
                progress.write("\r\x1b[K")
                progress.flush()
    finally:
        for moving in list(run.moving):
            moving.cancel()
        for connection in connections:
            connection.busy = False
            if connection.transport is not None:
                connection.transport.close()
        await asyncio.sleep(0)  # let the transports finish closing
    return BenchResult(
        settings=settings,
        requests=run.done,
        errors=run.errors,
        seconds=max(run.last_reply - start, 0.0),
        latency=latency_of(run.latencies),
        error_replies=dict(run.reasons),
    )


async def _connect(connections: list[_Connection], settings: BenchSettings) -> None:
    """Every connection on its starting address, else on the next one that answers."""
    count = len(settings.addresses)
    failures: dict[int, OSError] = {}

    async def connect(connection: _Connection) -> bool:
        first = connection.address
        for step in range(count):
            index = (first + step) % count
            if index not in failures:
                try:
                    await connection.open(index)
                except OSError as error:
                    failures[index] = error
                    continue
                return True
        return False

    opening = [asyncio.ensure_future(connect(connection)) for connection in connections]
    done, pending = await asyncio.wait(opening, timeout=CONNECT_TIMEOUT)
    for future in pending:
        future.cancel()
    everywhere = ", ".join(settings.where(n) for n in range(count))
    if pending:
        raise BenchError(f"cannot connect to {everywhere}: no answer within {CONNECT_TIMEOUT:g} s")
    if not all(future.result() for future in done):
        first = next(iter(failures.values()))
        raise BenchError(f"cannot connect to {everywhere}: {first}")


async def _watch(run: _Run, start: float, progress: TextIO | None) -> None:
    """Print the progress line (if asked) and fail the run if replies stop coming."""
    last_done, last_time, last_change = 0, start, start
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        now = perf_counter()
        done = run.done
        if done != last_done:
            last_change = now
        elif now - last_change > STALL_TIMEOUT:
            everywhere = ", ".join(
                run.settings.where(n) for n in range(len(run.settings.addresses))
            )
            run.fail(f"no reply from {everywhere} for {STALL_TIMEOUT:g} s")
            return
        if progress is not None:
            rate = (done - last_done) / (now - last_time)
            progress.write(f"\r\x1b[Kkayit bench: {done} requests, {rate:.0f} requests/s")
            progress.flush()
        last_done, last_time = done, now
