"""Who leads the cluster and where, as this node believes now.

The one place that knows: the client gateway, the forwarded-command handler, the gRPC
service and the reports all ask it at the moment they act, so a change of leader takes effect
everywhere at once. The node calls ``lead`` and ``follow`` as the metadata group's elections
go.
"""

from __future__ import annotations

import asyncio
import contextlib

from kayit.cluster.leader import Leader


class Leadership:
    def __init__(self, address: str) -> None:
        self.address = address  # this node's gRPC address
        self._local: Leader | None = None
        self._leader_address: str | None = None
        self._changed = asyncio.Event()

    @property
    def local(self) -> Leader | None:
        """This node's Leader while it leads; None while it does not."""
        return self._local

    @property
    def leader_address(self) -> str | None:
        """The gRPC address of the node that leads; None while no leader is known."""
        return self._leader_address

    def lead(self, leader: Leader) -> None:
        self._local = leader
        self._leader_address = self.address
        self._announce()

    def follow(self, leader_address: str | None) -> None:
        if self._local is None and leader_address == self._leader_address:
            return
        self._local = None
        self._leader_address = leader_address
        self._announce()

    async def wait_for_change(self, timeout: float) -> None:
        """Returns at the next change of leader, or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    def _announce(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
