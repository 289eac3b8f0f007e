"""The library client: moving on to the next one when a connection fails."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kayit.cli import main
from kayit.client import KayitClient
from kayit.server.ports import free_ports


@contextmanager
def answering(name: bytes, replies: int) -> Iterator[int]:
    """A server on a free port that answers each line with ``name`` and then, after
    ``replies`` lines on a connection, closes it (as a node that dies would)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection, connection.makefile("rb") as lines:
                for _ in range(replies):
                    if not lines.readline():
                        break
                    connection.sendall(name + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept; close alone would not
        listener.close()
        thread.join(timeout=5)


def test_connects_to_the_first_address_that_answers() -> None:
    (dead,) = free_ports(1)
    with answering(b"second", 10) as port:
        client = KayitClient("127.0.0.1", dead, fallbacks=[("127.0.0.1", port)])
        with client:
            assert client.address == ("127.0.0.1", port)
            assert client.get("x") == b"second"


def test_no_address_answering_raises() -> None:
    dead, also_dead = free_ports(2)
    with pytest.raises(ConnectionRefusedError):
        KayitClient("127.0.0.1", dead, fallbacks=[("127.0.0.1", also_dead)])


def test_a_failed_connection_fails_its_request_and_the_next_one_moves_on() -> None:
    with answering(b"first", 2) as first, answering(b"second", 10) as second:
        client = KayitClient("127.0.0.1", first, fallbacks=[("127.0.0.1", second)])
        with client:
            assert client.pipeline([b"GET a", b"GET b"]) == [b"first", b"first"]
            with pytest.raises(ConnectionError):
                client.get("c")  # its reply is lost: not sent again
            assert client.get("d") == b"second"
            assert client.address == ("127.0.0.1", second)


def test_with_one_address_a_failed_connection_is_made_again() -> None:
    with answering(b"only", 1) as port, KayitClient("127.0.0.1", port) as client:
        assert client.get("a") == b"only"
        with pytest.raises(ConnectionError):
            client.get("b")
        assert client.get("c") == b"only"


def test_kayit_client_refuses_a_bad_address(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["client", "127.0.0.1:6666,host:port"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "kayit client: argument address: not a port number in 'host:port' "
        "(see kayit client --help)\n"
    )
