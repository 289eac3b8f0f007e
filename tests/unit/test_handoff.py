"""Passing a client's connection from a member's process to the leader's (SCM_RIGHTS)."""

from __future__ import annotations

import asyncio
import os
import socket

from kayit.server.handoff import Desk, HandOver, desk_address


def _address(leader: str = "127.0.0.1:5555") -> bytes:
    return desk_address("127.0.0.1", 40_000 + os.getpid() % 20_000, leader)


async def _accepted_pair() -> tuple[socket.socket, socket.socket]:
    """A client socket and the server side of its connection, as a member accepts it."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    with listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = await loop.sock_accept(listener)
    return client, accepted


def test_a_passed_connection_is_served_by_the_desk_and_its_bytes_reach_it() -> None:
    async def scenario() -> None:
        address = _address()
        served: asyncio.Queue[socket.socket] = asyncio.Queue()
        desk = asyncio.create_task(Desk(address, served.put_nowait).run())
        await asyncio.sleep(0.05)
        hand_over = HandOver(lambda: address)
        client, accepted = await _accepted_pair()
        try:
            assert hand_over.pass_on(accepted)
            peer = accepted.getpeername()
            accepted.close()  # the member lets go: the leader's copy keeps the connection
            taken = await asyncio.wait_for(served.get(), 5)
            with taken:
                assert taken.getpeername() == peer
                client.sendall(b"GET a\n")
                taken.settimeout(5)
                assert taken.recv(100) == b"GET a\n"
                taken.sendall(b"$-1\n")
                client.settimeout(5)
                assert client.recv(100) == b"$-1\n"
        finally:
            client.close()
            hand_over.close()
            desk.cancel()
            await asyncio.gather(desk, return_exceptions=True)

    asyncio.run(scenario())


def test_nothing_is_passed_on_while_this_node_leads_or_no_desk_listens() -> None:
    async def scenario() -> None:
        address = _address()
        client, accepted = await _accepted_pair()
        with client, accepted:
            assert not HandOver(lambda: None).pass_on(accepted)  # this node leads
            nobody = HandOver(lambda: address)
            assert not nobody.pass_on(accepted)  # no leader on this host: serve it here
            # The connection is untouched: the member serves it itself.
            client.sendall(b"PING\n")
            accepted.settimeout(5)
            assert accepted.recv(100) == b"PING\n"

    asyncio.run(scenario())


def test_a_member_finds_a_desk_that_opens_later_and_follows_the_leader_it_knows() -> None:
    async def scenario() -> None:
        first, second = _address("127.0.0.1:5555"), _address("127.0.0.1:5556")
        leader = first
        served: dict[bytes, asyncio.Queue[socket.socket]] = {
            first: asyncio.Queue(),
            second: asyncio.Queue(),
        }
        hand_over = HandOver(lambda: leader)
        client, accepted = await _accepted_pair()
        desks = []
        with client, accepted:
            assert not hand_over.pass_on(accepted)  # no desk yet: served here
            for address in (first, second):
                desks.append(asyncio.create_task(Desk(address, served[address].put_nowait).run()))
            await asyncio.sleep(0.6)  # past the member's pause after it found none
            assert hand_over.pass_on(accepted)
            (await asyncio.wait_for(served[first].get(), 5)).close()
            # The first leader was deposed while paused, its desk still open: the member
            # passes connections to the leader it now knows.
            leader = second
            assert hand_over.pass_on(accepted)
            (await asyncio.wait_for(served[second].get(), 5)).close()
            assert served[first].empty()
            # A desk that closed (its leader stepped down, same address later) is found again.
            desks.pop().cancel()
            desks.append(asyncio.create_task(Desk(second, served[second].put_nowait).run()))
            await asyncio.sleep(0.05)
            assert hand_over.pass_on(accepted)
            (await asyncio.wait_for(served[second].get(), 5)).close()
            hand_over.close()
        for desk in desks:
            desk.cancel()
        await asyncio.gather(*desks, return_exceptions=True)

    asyncio.run(scenario())


def test_the_desk_serves_only_tcp_connections() -> None:
    async def scenario() -> None:
        address = _address()
        served: asyncio.Queue[socket.socket] = asyncio.Queue()
        desk = asyncio.create_task(Desk(address, served.put_nowait).run())
        await asyncio.sleep(0.05)
        link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        link.connect(address)
        left, right = socket.socketpair()
        with link, left, right:
            socket.send_fds(link, [b"c"], [left.fileno()])  # a Unix socket: refused
            client, accepted = await _accepted_pair()
            with client, accepted:
                socket.send_fds(link, [b"c"], [accepted.fileno()])
                taken = await asyncio.wait_for(served.get(), 5)
                with taken:
                    assert taken.family == socket.AF_INET
                assert served.empty()
        desk.cancel()
        await asyncio.gather(desk, return_exceptions=True)

    asyncio.run(scenario())
