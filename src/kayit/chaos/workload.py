"""Client workers: SET and GET on a small key space, every SET with a value never used before,
every operation recorded in the history as it is sent and as it is answered. Workers are spread
over the nodes (any node takes clients and forwards them to the leader, whichever it is)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from kayit.chaos.history import HistoryWriter, Kind, Outcome
from kayit.protocol.errors import error_code


@dataclass(frozen=True, slots=True)
class Workload:
    workers: int = 8
    keys: int = 20
    set_share: float = 0.5
    timeout: float = 5.0  # past it, an operation's outcome is unknown (info)
    value_bytes: tuple[int, int] = (5, 300)

    def key(self, number: int) -> str:
        return f"k{number}"


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    value: str | None = None  # what a GET read (None: NOT_FOUND)
    error: str = ""


def classify(kind: Kind, reply: bytes) -> Answer:
    """What a reply line tells: done, not done, or unknown."""
    text = reply.decode("utf-8", "replace")
    if reply.startswith(b"ERROR"):
        code = error_code(reply)
        nothing_done = code is not None and code.nothing_done
        return Answer(Outcome.FAIL if nothing_done else Outcome.INFO, error=text[:120])
    if kind is Kind.SET:
        if reply == b"OK":
            return Answer(Outcome.OK)
        return Answer(Outcome.INFO, error=f"unexpected reply {text[:60]!r}")
    return Answer(Outcome.OK, None if reply == b"NOT_FOUND" else text)


class Connection:
    """One client connection at a time, to one of the nodes. It is dropped after any unknown
    outcome (a late reply must never be taken for the next request's), and after any request
    that did not succeed the next one goes to the next node: this one may be dead, paused or
    cut off from the leader."""

    def __init__(self, addresses: list[tuple[str, int]], first: int, timeout: float) -> None:
        self._addresses = addresses
        self._at = first % len(addresses)
        self._timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, kind: Kind, line: bytes) -> Answer:
        answer = await self._exchange(kind, line)
        if answer.outcome is not Outcome.OK:
            self.drop()
            self._at = (self._at + 1) % len(self._addresses)
        return answer

    async def _exchange(self, kind: Kind, line: bytes) -> Answer:
        if self._streams is None:
            try:
                self._streams = await asyncio.wait_for(
                    asyncio.open_connection(*self._addresses[self._at], limit=1 << 20),
                    self._timeout,
                )
            except (OSError, TimeoutError) as error:
                # Nothing was sent: the operation certainly did not happen.
                return Answer(Outcome.FAIL, error=f"connect: {error!r}"[:120])
        reader, writer = self._streams
        try:
            writer.write(line + b"\n")
            reply = await asyncio.wait_for(reader.readline(), self._timeout)
        except TimeoutError:
            return Answer(Outcome.INFO, error="timeout")
        except OSError as error:
            return Answer(Outcome.INFO, error=f"connection lost: {error!r}"[:120])
        if not reply.endswith(b"\n"):
            return Answer(Outcome.INFO, error="connection closed")
        return classify(kind, reply[:-1])

    def drop(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Clients:
    """The workers of one run, sharing one history."""

    def __init__(
        self,
        workload: Workload,
        addresses: list[tuple[str, int]],
        history: HistoryWriter,
        seed: int,
    ) -> None:
        self.workload = workload
        self._addresses = addresses
        self._history = history
        self._seed = seed

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(n, stop) for n in range(self.workload.workers)))

    async def _worker(self, number: int, stop: asyncio.Event) -> None:
        rng = random.Random(self._seed * 1000 + number)
        work = self.workload
        connection = Connection(self._addresses, number, work.timeout)
        process, sequence = number, 0
        while not stop.is_set():
            key = work.key(rng.randrange(work.keys))
            if rng.random() < work.set_share:
                sequence += 1
                padding = "x" * rng.randint(*work.value_bytes)
                value = f"p{number}-{sequence}-{padding}"
                answer = await self.operate(connection, process, Kind.SET, key, value)
            else:
                answer = await self.operate(connection, process, Kind.GET, key)
            if answer.outcome is Outcome.INFO:
                # Its operation may still be under way: the worker goes on as a new process,
                # as Jepsen's do, so one process never has two operations open.
                process += work.workers
            elif answer.outcome is Outcome.FAIL and answer.error.startswith("connect"):
                await asyncio.sleep(0.1)  # its node is down: do not spin through the others
        connection.drop()

    async def operate(
        self, connection: Connection, process: int, kind: Kind, key: str, value: str = ""
    ) -> Answer:
        line = f"SET {key} {value}" if kind is Kind.SET else f"GET {key}"
        written = value if kind is Kind.SET else None
        self._history.invoke(process, kind, key, written, time.monotonic())
        answer = await connection.request(kind, line.encode())
        read = answer.value if kind is Kind.GET else None  # a SET's value is in its invoke
        self._history.complete(
            process, kind, key, answer.outcome, read, time.monotonic(), answer.error
        )
        return answer

    async def read_all(self, process: int) -> list[Answer]:
        """One GET of every key, in order, as one more process (the final reads)."""
        connection = Connection(self._addresses, 0, self.workload.timeout * 4)
        answers = [
            await self.operate(connection, process, Kind.GET, self.workload.key(n))
            for n in range(self.workload.keys)
        ]
        connection.drop()
        return answers
