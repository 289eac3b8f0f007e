"""A small blocking client for the text protocol, used by the CLI and the tests."""

from __future__ import annotations

import socket
from collections.abc import Iterable


class KayitClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 6666, timeout: float = 30.0) -> None:
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._reader = self._socket.makefile("rb")

    def close(self) -> None:
        self._reader.close()
        self._socket.close()

    def __enter__(self) -> KayitClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, line: bytes) -> bytes:
        """Send one command line (without its newline); return its reply without the newline."""
        self._socket.sendall(line + b"\n")
        return self.read_reply()

    def pipeline(self, lines: Iterable[bytes]) -> list[bytes]:
        """Send every line in one write, then read one reply per line, in order."""
        lines = list(lines)
        self._socket.sendall(b"".join(line + b"\n" for line in lines))
        return [self.read_reply() for _ in lines]

    def read_reply(self) -> bytes:
        reply = self._reader.readline()
        if not reply.endswith(b"\n"):
            raise ConnectionError("the node closed the connection")
        return reply[:-1]

    def set(self, message_id: str, message: str | bytes) -> bytes:
        data = message.encode() if isinstance(message, str) else message
        return self.request(b"SET " + message_id.encode() + b" " + data)

    def get(self, message_id: str) -> bytes:
        return self.request(b"GET " + message_id.encode())
