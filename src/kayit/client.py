"""A small blocking client for the text protocol, used by the CLI and the tests.

Any node takes clients, so a client may be given several addresses: it connects to the first
that answers and, when its connection fails, moves on to the next for the following request.
The request that was under way is not sent again: its reply was lost, and a SET may or may not
have been carried out. Given a password, it sends ``AUTH`` on every connection it makes before
anything else.
"""

from __future__ import annotations

import io
import socket
import ssl
from collections.abc import Iterable, Sequence

from kayit.addresses import DEFAULT_HOST, Address, format_address
from kayit.config import DEFAULT_CLIENT_PORT


class AuthenticationFailed(ConnectionError):
    """A node did not accept the password: its reply to AUTH is in the message."""


class KayitClient:
    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_CLIENT_PORT,
        timeout: float = 30.0,
        *,
        fallbacks: Sequence[Address] = (),
        password: str | bytes | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Connects at once (raises OSError if no address answers, AuthenticationFailed if
        one refuses the password). ``fallbacks``: more addresses, tried in order after
        ``host:port``. ``password``: sent with AUTH on every connection. ``tls``: for nodes
        whose client ports speak TLS (``--client-tls``); each is checked against its address."""
        self.addresses: list[Address] = [(host, port), *fallbacks]
        self._password = password.encode() if isinstance(password, str) else password
        if self._password is not None and (b"\n" in self._password or b"\r" in self._password):
            raise ValueError("a password must be one line")
        self._timeout = timeout
        self._tls = tls
        self._next = 0  # where the next connection attempt starts
        self._socket: socket.socket | None = None
        self._reader: io.BufferedReader | None = None
        self.address = self._connect()

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> KayitClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, line: bytes) -> bytes:
        """Send one command line (without its newline); return its reply without the newline.
        Raises OSError when the connection fails (the next request moves on)."""
        return self.pipeline([line])[0]

    def pipeline(self, lines: Iterable[bytes]) -> list[bytes]:
        """Send every line in one write, then read one reply per line, in order."""
        lines = list(lines)
        connection = self._connection()
        try:
            connection.sendall(b"".join(line + b"\n" for line in lines))
            return [self.read_reply() for _ in lines]
        except OSError:
            self._drop()
            raise

    def read_reply(self) -> bytes:
        if self._reader is None:
            raise ConnectionError(f"the connection to {self._where} failed earlier")
        reply = self._reader.readline()
        if not reply.endswith(b"\n"):
            self._drop()
            raise ConnectionError(f"{self._where} closed the connection")
        return reply[:-1]

    def reconnect(self) -> Address:
        """Connect again, to the next address that answers; raises OSError if none does."""
        self._drop()
        self.address = self._connect()
        return self.address

    def set(self, message_id: str, message: str | bytes) -> bytes:
        data = message.encode() if isinstance(message, str) else message
        return self.request(b"SET " + message_id.encode() + b" " + data)

    def get(self, message_id: str) -> bytes:
        return self.request(b"GET " + message_id.encode())

    @property
    def _where(self) -> str:
        return format_address(self.address)

    def _connection(self) -> socket.socket:
        if self._socket is None:
            self.address = self._connect()
        assert self._socket is not None
        return self._socket

    def _connect(self) -> Address:
        """Try every address once, from the one after the last used; raise the last error."""
        count = len(self.addresses)
        failure: OSError | None = None
        for step in range(count):
            address = self.addresses[(self._next + step) % count]
            try:
                connection = socket.create_connection(address, timeout=self._timeout)
                if self._tls is not None:
                    connection = self._tls.wrap_socket(connection, server_hostname=address[0])
                self._socket = connection
                self._reader = connection.makefile("rb")
                self.address = address
                if self._password is not None:
                    self._authenticate(self._password)
            except AuthenticationFailed:
                self._drop()
                raise  # the same password will not do on another node
            except OSError as error:
                self._drop()
                failure = error
                continue
            self._next = (self._next + step + 1) % count
            return address
        assert failure is not None
        raise failure

    def _authenticate(self, password: bytes) -> None:
        assert self._socket is not None
        self._socket.sendall(b"AUTH " + password + b"\n")
        reply = self.read_reply()
        if reply != b"OK":
            raise AuthenticationFailed(
                f"{self._where} refused the password: {reply.decode('utf-8', 'replace')}"
            )

    def _drop(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
