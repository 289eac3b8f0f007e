"""``kayit bench --course``: the course's own stress client, one command at a time.

One blocking connection writes a command line and reads its one reply line before the next, so
every latency is a whole round trip with nothing else in flight. After an ERROR reply (or a
wrong one) or a failed connection it connects again to the same address and goes on, as that
client does; the failed command counts as an error. It runs in a thread of its own, off the
event loop that ``run_bench`` was awaited on.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter
from time import perf_counter
from typing import TextIO

from kayit.bench.runner import CONNECT_TIMEOUT, PROGRESS_EVERY, STALL_TIMEOUT, BenchError
from kayit.bench.settings import BenchSettings
from kayit.bench.stats import LOST, BenchResult, CommandFigures, latency_of
from kayit.bench.wire import COURSE_COMMANDS, CourseCommand, CourseRequests, error_reason
from kayit.client import AuthenticationFailed, KayitClient

RETRY_EVERY = 0.1  # seconds between attempts to connect again


async def run_course(settings: BenchSettings, progress: TextIO | None = None) -> BenchResult:
    """Run the --course load; raises BenchError when the address stops answering."""
    return await asyncio.to_thread(_CourseRun(settings, progress).run)


class _CourseRun:
    def __init__(self, settings: BenchSettings, progress: TextIO | None) -> None:
        self.settings = settings
        self._progress = progress
        seed = settings.seed if settings.seed is not None else random.randrange(2**63)
        self._requests = CourseRequests(settings, random.Random(seed))
        self._latencies = {name: array("d") for name in COURSE_COMMANDS}  # milliseconds
        self._errors = dict.fromkeys(COURSE_COMMANDS, 0)
        self._reasons: Counter[str] = Counter()
        self.reconnects = 0

    def run(self) -> BenchResult:
        settings = self.settings
        client = self._connect(first=True)
        done = 0
        start = perf_counter()
        deadline = start + settings.duration if settings.duration is not None else None
        next_progress = start + PROGRESS_EVERY
        last_reply = start
        try:
            while (done < settings.requests) if deadline is None else (last_reply < deadline):
                command, line = self._requests.next()
                sent = perf_counter()
                try:
                    reply: bytes | None = client.request(line)
                except TimeoutError:
                    raise BenchError(
                        f"no reply from {settings.where(0)} for {STALL_TIMEOUT:g} s"
                    ) from None
                except OSError:
                    reply = None  # the connection failed: the reply is lost
                last_reply = perf_counter()
                self._latencies[command].append((last_reply - sent) * 1000.0)
                done += 1
                if reply is None or not _right(command, reply):
                    self._errors[command] += 1
                    if reply is None:
                        self._reasons[LOST] += 1
                    elif reply.startswith(b"ERROR"):
                        self._reasons[error_reason(reply)] += 1
                    client.close()
                    client = self._connect(first=False)
                if self._progress is not None and last_reply >= next_progress:
                    next_progress = last_reply + PROGRESS_EVERY
                    self._show(done, last_reply - start)
        finally:
            client.close()
            if self._progress is not None:
                self._progress.write("\r\x1b[K")
                self._progress.flush()
        return self._result(done, last_reply - start)

    def _connect(self, first: bool) -> KayitClient:
        """A connection to the address, trying for CONNECT_TIMEOUT seconds."""
        host, port = self.settings.addresses[0]
        give_up = time.monotonic() + CONNECT_TIMEOUT
        while True:
            try:
                client = KayitClient(
                    host,
                    port,
                    timeout=STALL_TIMEOUT,
                    password=self.settings.password,
                    tls=self.settings.tls,
                )
            except AuthenticationFailed as error:
                raise BenchError(str(error)) from None
            except OSError as error:
                if time.monotonic() >= give_up:
                    again = "" if first else "connecting again after a failure: "
                    raise BenchError(
                        f"{again}cannot connect to {self.settings.where(0)}: {error}"
                    ) from None
                time.sleep(RETRY_EVERY)
                continue
            if not first:
                self.reconnects += 1
            return client

    def _show(self, done: int, seconds: float) -> None:
        assert self._progress is not None
        rate = done / seconds if seconds > 0 else 0.0
        self._progress.write(f"\r\x1b[Kkayit bench: {done} requests, {rate:.0f} requests/s")
        self._progress.flush()

    def _result(self, done: int, seconds: float) -> BenchResult:
        every = array("d")
        for latencies in self._latencies.values():
            every.extend(latencies)
        return BenchResult(
            settings=self.settings,
            requests=done,
            errors=sum(self._errors.values()),
            seconds=max(seconds, 0.0),
            latency=latency_of(every),
            commands={
                name: CommandFigures(
                    requests=len(self._latencies[name]),
                    errors=self._errors[name],
                    latency=latency_of(self._latencies[name]),
                )
                for name in COURSE_COMMANDS
            },
            reconnects=self.reconnects,
            error_replies=dict(self._reasons),
        )


def _right(command: CourseCommand, reply: bytes) -> bool:
    """A SET must get OK; a GET gets its value or NOT_FOUND, and fails only with ERROR."""
    if command == "get":
        return not reply.startswith(b"ERROR")
    return reply == b"OK"
