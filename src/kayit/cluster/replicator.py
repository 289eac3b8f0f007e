"""Replicator: sends copies to members, coalescing concurrent SETs into one call per member.
Every copy has a deadline, so that a paused or cut-off member holds up no SET for long."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from kayit.batching import Batcher
from kayit.cluster.transport import Copy, CopySink, MemberSlow

log = logging.getLogger(__name__)

_BATCH_BYTES = 4 * 1024 * 1024
# The slowest rate a live member is expected to store at: well below what gRPC and a disk
# sustain on a loaded machine, so that only a stalled member runs past its deadline.
STORE_RATE = 4 * 1024 * 1024  # bytes per second
# A copy is also a file the member creates: counted as this many bytes more, ~1 ms at
# STORE_RATE (the slowest file creation rate measured on this VM's ext4).
_COPY_OVERHEAD = 4096


@dataclass(frozen=True, slots=True)
class _Outgoing:
    copy: Copy
    deadline: float  # loop time at which its caller stops waiting


class Replicator:
    def __init__(
        self, transport: CopySink, store_timeout: float, in_flight_per_member: int = 2
    ) -> None:
        self._transport = transport
        self._store_timeout = store_timeout
        self._in_flight = in_flight_per_member
        self._queues: dict[str, Batcher[_Outgoing, None]] = {}
        self._backlog: Counter[str] = Counter()  # bytes given to each member, not yet stored

    def backlog(self, address: str) -> int:
        """Bytes given to ``address`` and not yet stored there (each copy counted with the
        file it makes)."""
        return self._backlog[address]

    async def store(self, address: str, copy: Copy) -> None:
        """Returns once ``address`` holds the copy. Raises MemberUnreachable, or MemberSlow
        when its deadline passes: the base timeout plus the time its bytes, and those queued
        ahead of it for that member, take at STORE_RATE. A copy still queued then is not sent."""
        weight = len(copy.message) + _COPY_OVERHEAD
        timeout = self._store_timeout + (self._backlog[address] + weight) / STORE_RATE
        deadline = asyncio.get_running_loop().time() + timeout
        self._backlog[address] += weight
        try:
            async with asyncio.timeout_at(deadline):
                await self._queue(address).submit(_Outgoing(copy, deadline))
        except TimeoutError as error:
            raise MemberSlow(f"not stored within {timeout:.2f} s") from error
        finally:
            self._backlog[address] -= weight

    def _queue(self, address: str) -> Batcher[_Outgoing, None]:
        queue = self._queues.get(address)
        if queue is None:

            async def send(batch: list[_Outgoing], address: str = address) -> list[None]:
                # The call lasts while any of its callers still waits, no longer: a member that
                # hangs holds its in-flight slot no longer than that.
                timeout = max(o.deadline for o in batch) - asyncio.get_running_loop().time()
                copies = [outgoing.copy for outgoing in batch]
                try:
                    await self._transport.store_many(address, copies, timeout)
                except MemberSlow:
                    log.warning(
                        "member %s did not store a batch of %d copies within %.2f s",
                        address,
                        len(batch),
                        timeout,
                    )
                    raise
                return [None] * len(batch)

            queue = Batcher(
                send,
                max_items=512,
                max_bytes=_BATCH_BYTES,
                weigh=lambda outgoing: len(outgoing.copy.message),
                in_flight=self._in_flight,
            )
            self._queues[address] = queue
        return queue
