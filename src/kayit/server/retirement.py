"""A node removed from its cluster (``kayit member remove``) finds out, and stops for good.

Its own metadata says so once it applies its removal, but it often never does: the leader
takes a removed node out of the Raft configuration, and stops sending to it, as soon as the
removal commits, and a node that was down meanwhile hears nothing at all. So a node that
hears from no leader for a while asks the others. Any node whose metadata has it removed is
right: a removal is applied only once committed, and never undone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from kayit.cluster.metadata_group import MetadataGroup
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.peers import Peers

_CHECK_EVERY = 0.2  # seconds between looks at the node's own metadata
_ASK_TIMEOUT = 1.0


class RetirementWatch:
    """Feed it every Raft message's sender (``heard``); ``wait`` returns once the node was
    removed. ``quiet_after``: seconds without a message from the leader before the others
    are asked, and between asks (longer than an election, so that a live cluster is not
    asked at every one)."""

    def __init__(
        self, peers: Peers, quiet_after: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._peers = peers
        self._quiet_after = quiet_after
        self._clock = clock
        self._heard: dict[str, float] = {}  # node id -> when a Raft message from it arrived
        self._asked = clock()

    def heard(self, sender: str) -> None:
        self._heard[sender] = self._clock()

    async def wait(self, group: MetadataGroup) -> None:
        """Returns once ``group``'s node is removed and does not lead: a removed leader
        first takes itself out of the configuration and hands leadership over."""
        while not group.retired or group.is_leader:
            if self._quiet(group):
                self._asked = self._clock()
                if await self._others_say_removed(group):
                    return
            await asyncio.sleep(_CHECK_EVERY)

    def _quiet(self, group: MetadataGroup) -> bool:
        if group.is_leader:
            return False
        leader = group.leader_id
        last = max(self._asked, self._heard.get(leader, 0.0) if leader else 0.0)
        return self._clock() - last >= self._quiet_after

    async def _others_say_removed(self, group: MetadataGroup) -> bool:
        async def says_removed(address: str) -> bool:
            try:
                status = await self._peers.stub(address).Status(
                    pb.StatusRequest(), timeout=_ASK_TIMEOUT
                )
            except grpc.aio.AioRpcError:
                return False
            return group.id in status.removed

        others = [address for node, address in group.metadata.nodes.items() if node != group.id]
        return any(await asyncio.gather(*(says_removed(address) for address in others)))
