"""Replicator: sends copies to members, coalescing concurrent SETs into one call per member."""

from __future__ import annotations

from kayit.batching import Batcher
from kayit.cluster.transport import Copy, MemberTransport

_BATCH_BYTES = 4 * 1024 * 1024


class Replicator:
    def __init__(self, transport: MemberTransport, in_flight_per_member: int = 2) -> None:
        self._transport = transport
        self._in_flight = in_flight_per_member
        self._queues: dict[str, Batcher[Copy, None]] = {}

    async def store(self, address: str, copy: Copy) -> None:
        """Returns once ``address`` holds the copy. Raises MemberUnreachable."""
        queue = self._queues.get(address)
        if queue is None:

            async def send(copies: list[Copy], address: str = address) -> list[None]:
                await self._transport.store_many(address, copies)
                return [None] * len(copies)

            queue = Batcher(
                send,
                max_items=512,
                max_bytes=_BATCH_BYTES,
                weigh=lambda copy: len(copy.message),
                in_flight=self._in_flight,
            )
            self._queues[address] = queue
        return await queue.submit(copy)
