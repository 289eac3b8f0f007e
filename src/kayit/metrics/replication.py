"""The leader's transport to its members, measured: each batch of copies is timed and
counted per member, the other calls pass through untouched."""

from __future__ import annotations

import time

from kayit.cluster.transport import Copy, Held, MemberTransport
from kayit.metrics.instruments import NodeMetrics
from kayit.version import Version


class MeasuredTransport:
    def __init__(self, transport: MemberTransport, metrics: NodeMetrics) -> None:
        self._transport = transport
        self._metrics = metrics

    async def store_many(self, address: str, copies: list[Copy], timeout: float) -> None:
        meter = self._metrics.replication(address)
        started = time.perf_counter()
        failed = True
        try:
            await self._transport.store_many(address, copies, timeout)
            failed = False
        finally:
            meter.record(len(copies), time.perf_counter() - started, failed)

    async def retrieve(self, address: str, message_id: str, version: Version) -> bytes | None:
        return await self._transport.retrieve(address, message_id, version)

    async def inventory(self, address: str, verify: bool) -> Held:
        return await self._transport.inventory(address, verify)

    async def delete(self, address: str, copies: list[tuple[str, Version]]) -> None:
        await self._transport.delete(address, copies)
