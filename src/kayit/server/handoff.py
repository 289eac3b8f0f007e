"""Clients of the shared port are served by the leader's own process when it runs on this host.

Every node of a host listens on the shared client port (SO_REUSEPORT) so that a client of it is
served while any node lives; the kernel spreads new connections over the nodes, and a member
forwards each command of its clients to the leader. That hop cost about 40% of the SET
throughput at TOLERANCE=2 (one more gRPC call in and out per command, on two processes). So a
member that accepts a connection on the shared port passes the socket itself to the leader's
process (SCM_RIGHTS over a Unix socket) before it has read a byte or begun TLS: the leader serves
it as if it had accepted it. The leader takes such sockets on an abstract Unix address named
after the shared port only while it leads, and only from processes of its own user.

A member that cannot pass a connection on (no leader on this host, a leader that has just lost
its lead, a full queue) serves it itself and forwards, as before: the shortcut is never needed
for correctness. A connection passed on while the leader it went to closes its desk is closed
by the kernel, as if that leader had died: the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import socket
import struct
from collections.abc import Callable

log = logging.getLogger(__name__)

_TCP = (socket.AF_INET, socket.AF_INET6)
_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid of SO_PEERCRED
_RETRY_DESK = 0.5  # seconds between a new leader's tries for a desk its predecessor still holds
_RETRY_LINK = 0.5  # seconds a member serves clients itself after it found no desk


def desk_address(host: str, port: int, leader: str) -> bytes:
    """The abstract Unix address (no file to clean up after a SIGKILL) where the leader at gRPC
    address ``leader`` takes the sockets of the nodes sharing host:port. Named after the leader
    too, so that a member passes connections only to the leader it knows: a leader deposed while
    it was paused (SIGSTOP) still holds its own desk, and nobody sends it clients any more."""
    digest = hashlib.sha256(f"{host}:{port} {leader}".encode()).hexdigest()[:32]
    return f"\0kayit-clients-{digest}".encode()


def _same_user(peer: socket.socket) -> bool:
    credentials = peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    _pid, uid, _gid = _CREDENTIALS.unpack(credentials)
    return bool(uid == os.getuid())


class HandOver:
    """A member's side: passes connections of the shared port to the desk of the leader it
    knows; ``desk`` names that desk, None while this node leads or knows no leader."""

    def __init__(self, desk: Callable[[], bytes | None]) -> None:
        self._desk = desk
        self._link: socket.socket | None = None
        self._linked_to: bytes | None = None
        self._next_try = 0.0

    def pass_on(self, connection: socket.socket) -> bool:
        """Whether ``connection`` went to the leader's process (then close it here)."""
        address = self._desk()
        if address is None:
            return False
        if address != self._linked_to:  # a new leader
            self.close()
            self._linked_to, self._next_try = address, 0.0
        for _ in range(2):  # a link to a desk that has closed fails once; a new one may not
            link = self._link or self._connect(address)
            if link is None:
                return False
            try:
                return socket.send_fds(link, [b"c"], [connection.fileno()]) == 1
            except OSError:  # the desk closed (its node no longer leads, or died), or is full
                self.close()
        return False

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def _connect(self, address: bytes) -> socket.socket | None:
        now = asyncio.get_running_loop().time()
        if now < self._next_try:
            return None
        link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        link.setblocking(False)
        try:
            link.connect(address)
            if not _same_user(link):
                raise PermissionError("the desk belongs to another user")
        except OSError as error:
            link.close()
            self._next_try = now + _RETRY_LINK
            if isinstance(error, PermissionError):
                log.warning("not passing clients to the leader's process: %s", error)
            return None
        self._link = link
        return link


class Desk:
    """The leader's side: takes the sockets members pass on and hands each to ``serve``."""

    def __init__(self, address: bytes, serve: Callable[[socket.socket], None]) -> None:
        self._address = address
        self._serve = serve
        self._links: set[socket.socket] = set()

    async def run(self) -> None:
        """Takes sockets until cancelled (when this node stops leading)."""
        loop = asyncio.get_running_loop()
        listener = await self._listen()
        loop.add_reader(listener, self._accept, listener)
        try:
            await loop.create_future()  # until cancelled
        finally:
            loop.remove_reader(listener)
            listener.close()
            for link in self._links:
                loop.remove_reader(link)
                link.close()
            self._links.clear()

    async def _listen(self) -> socket.socket:
        """The desk's listening socket, once the address is free: a leader that was deposed
        may hold it a moment longer."""
        while True:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.setblocking(False)
            try:
                listener.bind(self._address)
                listener.listen(64)
                return listener
            except OSError as error:
                listener.close()
                if error.errno != errno.EADDRINUSE:
                    raise
            await asyncio.sleep(_RETRY_DESK)

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                link, _ = listener.accept()
            except BlockingIOError:
                return
            if not _same_user(link):
                link.close()
                continue
            link.setblocking(False)
            self._links.add(link)
            loop.add_reader(link, self._receive, link)

    def _receive(self, link: socket.socket) -> None:
        while True:
            try:
                message, fds, _flags, _ = socket.recv_fds(link, 1, 1, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the member closed its link
                asyncio.get_running_loop().remove_reader(link)
                self._links.discard(link)
                link.close()
                return
            for fd in fds:
                connection = socket.socket(fileno=fd)
                if connection.type != socket.SOCK_STREAM or connection.family not in _TCP:
                    connection.close()  # not a client's connection: nothing a node sends
                    continue
                try:
                    self._serve(connection)
                except Exception:
                    log.exception("a client passed on by a member could not be served")
                    with contextlib.suppress(OSError):
                        connection.close()
