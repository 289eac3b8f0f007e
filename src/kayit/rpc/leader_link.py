"""A member's link to its leader: join, then heartbeat; join again whenever the leader
forgets us (it restarted), and wait patiently while it is down."""

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
        leader: str,
        address: str,
        interval: float,
        message_count: Callable[[], int],
    ) -> None:
        self.leader = leader
        self._stub = peers.stub(leader)
        self._timeout = peers.timeout
        self._address = address
        self._interval = interval
        self._message_count = message_count
        self.connected = False
        self._waiting = False

    async def run(self) -> None:
        while True:
            try:
                await self._beat()
            except grpc.aio.AioRpcError as error:
                if self.connected or not self._waiting:
                    log.warning(
                        "leader %s unreachable (%s); retrying every %.1f s",
                        self.leader,
                        error.code().name,
                        self._interval,
                    )
                self.connected = False
                self._waiting = True
            await asyncio.sleep(self._interval)

    async def _beat(self) -> None:
        count = self._message_count()
        if self.connected:
            reply = await self._stub.Heartbeat(
                pb.HeartbeatRequest(address=self._address, message_count=count),
                timeout=self._timeout,
            )
            if reply.known:
                return
            log.info("leader %s does not know this member; joining again", self.leader)
        joined = await self._stub.Join(
            pb.JoinRequest(address=self._address, message_count=count), timeout=self._timeout
        )
        if not joined.accepted:
            log.error("leader %s refused to let this member join: %s", self.leader, joined.reason)
            self.connected = False
            return
        if not self.connected:
            log.info("joined leader %s", self.leader)
        self.connected = True
        self._waiting = False
