"""RESP2, Redis's protocol: commands from arrays of bulk strings, and reply encoding.

SET and GET become the same SetCommand/GetCommand as text lines; the handful of commands that
Redis clients send on their own (PING, COMMAND, CONFIG GET, ...) become a ServerCommand.
"""

from __future__ import annotations

from dataclasses import dataclass

from kayit.protocol.commands import (
    AuthCommand,
    Command,
    GetCommand,
    InvalidAuth,
    InvalidCommand,
    SetCommand,
    validate_id,
)
from kayit.protocol.errors import ErrorCode

# name -> (fewest, most) arguments after the name; None: no upper bound
SERVER_COMMANDS: dict[str, tuple[int, int | None]] = {
    "PING": (0, 1),
    "ECHO": (1, 1),
    "QUIT": (0, 0),
    "DBSIZE": (0, 0),
    "INFO": (0, None),
    "COMMAND": (0, None),
    "CONFIG": (1, None),
    "CLIENT": (1, None),
    "SELECT": (1, 1),
    "HELLO": (0, None),
}


@dataclass(frozen=True, slots=True)
class ServerCommand:
    """A command about the connection or the server rather than the data."""

    name: str
    args: list[bytes]


def parse_resp_command(args: list[bytes]) -> Command | ServerCommand:
    name = args[0].decode("ascii", "replace").upper()
    rest = args[1:]
    if name == "SET":
        if len(rest) != 2:
            return InvalidCommand("SET takes a key and a value; options are not supported")
        key, value = rest
        problem = _key_problem(key)
        if problem:
            return InvalidCommand(problem)
        if not value:
            return InvalidCommand("empty value")
        return SetCommand(key.decode("utf-8"), value)
    if name == "GET":
        if len(rest) != 1:
            return InvalidCommand("wrong number of arguments for 'get' command")
        problem = _key_problem(rest[0])
        return InvalidCommand(problem) if problem else GetCommand(rest[0].decode("utf-8"))
    if name == "AUTH":
        if not rest:
            return InvalidAuth("wrong number of arguments for 'auth' command")
        if len(rest) > 2:
            return InvalidAuth("syntax error")
        return AuthCommand(rest[-1], rest[0] if len(rest) == 2 else None)
    arity = SERVER_COMMANDS.get(name)
    if arity is None:
        return InvalidCommand(f"unknown command '{name[:32]}'")
    fewest, most = arity
    if len(rest) < fewest or (most is not None and len(rest) > most):
        return InvalidCommand(f"wrong number of arguments for '{name.lower()}' command")
    return ServerCommand(name, rest)


@dataclass(frozen=True, slots=True)
class Hello:
    """``HELLO [protover [AUTH username password] [SETNAME name]]``: the handshake of RESP3
    clients, and of RESP2 ones that authenticate in it."""

    auth: AuthCommand | None


def parse_hello(args: list[bytes]) -> Hello | bytes:
    """The HELLO, or the error reply to it: a protocol version other than 2 first, then a
    bad option, as Redis checks them. (SETNAME is taken and ignored, as CLIENT SETNAME is.)"""
    if args and args[0] != b"2":
        # As Redis answers a version it does not speak; clients such as redis-py 8
        # (RESP3 by default) then need protocol=2.
        return error("this server speaks RESP2 only", kind="NOPROTO")
    options = args[1:]
    auth = None
    position = 0
    while position < len(options):
        option = options[position].upper()
        left = len(options) - position - 1
        if option == b"AUTH" and left >= 2:
            auth = AuthCommand(options[position + 2], options[position + 1])
            position += 3
        elif option == b"SETNAME" and left >= 1:
            position += 2
        else:
            shown = options[position][:32].decode("utf-8", "replace")
            return error(f"Syntax error in HELLO option '{shown}'")
    return Hello(auth)


def _key_problem(key: bytes) -> str | None:
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "key is not valid UTF-8"
    return validate_id(text)


def simple(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


def bulk(value: bytes | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    return b"$%d\r\n%b\r\n" % (len(value), value)


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def error(reason: str, kind: str = "ERR") -> bytes:
    flat = " ".join(reason.split())
    return f"-{kind} ".encode() + flat.encode("utf-8", "replace") + b"\r\n"


def coded_error(code: ErrorCode, reason: str) -> bytes:
    """Request errors stay ``-ERR``, as Redis answers syntax errors, and so do limits (``-ERR
    LIMIT ...``: Redis answers ``-ERR max number of clients reached``); the other errors lead
    with their code, as Redis's own ``-NOREPLICAS`` and ``-NOAUTH`` do."""
    if code is ErrorCode.BADREQUEST:
        return error(reason)
    if code is ErrorCode.LIMIT:
        return error(f"{code.value} {reason}")
    return error(reason, code.value)


def array(items: list[bytes]) -> bytes:
    """An array of already encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


EMPTY_ARRAY = b"*0\r\n"
OK = b"+OK\r\n"
