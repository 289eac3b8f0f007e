"""A member's link to its leader: join, then heartbeat; join again whenever the leader
forgets us (it restarted) or another node leads, and wait patiently while none answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.peers import Peers

log = logging.getLogger(__name__)


class LeaderLink:
    def __init__(
        self,
        *,
        peers: Peers,
        leader: Callable[[], str | None],
        address: str,
        interval: float,
        message_count: Callable[[], int],
    ) -> None:
        """``leader``: the gRPC address of the node that leads now, None while none is known;
        asked at every beat."""
        self._peers = peers
        self._current_leader = leader
        self.leader: str | None = None  # the leader this member last beat to
        self._timeout = peers.timeout
        self._address = address
        self._interval = interval
        self._message_count = message_count
        self.connected = False
        self._waiting = False

    async def run(self) -> None:
        while True:
            leader = self._current_leader()
            if leader != self.leader:
                self.leader = leader
                self.connected = False  # a new leader has to learn of us: join it
                self._waiting = False
            if leader is not None:
                try:
                    await self._beat(leader)
                except grpc.aio.AioRpcError as error:
                    if self.connected or not self._waiting:
                        log.warning(
                            "leader %s unreachable (%s); retrying every %.1f s",
                            leader,
                            error.code().name,
                            self._interval,
                        )
                    self.connected = False
                    self._waiting = True
            await asyncio.sleep(self._interval)

    async def _beat(self, leader: str) -> None:
        stub = self._peers.stub(leader)
        count = self._message_count()
        if self.connected:
            reply = await stub.Heartbeat(
                pb.HeartbeatRequest(address=self._address, message_count=count),
                timeout=self._timeout,
            )
            if reply.known:
                return
            log.info("leader %s does not know this member; joining again", leader)
        joined = await stub.Join(
            pb.JoinRequest(address=self._address, message_count=count), timeout=self._timeout
        )
        if not joined.accepted:
            log.error("leader %s refused to let this member join: %s", leader, joined.reason)
            self.connected = False
            return
        if not self.connected:
            log.info("joined leader %s", leader)
        self.connected = True
        self._waiting = False
