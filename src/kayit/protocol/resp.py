"""RESP, Redis's protocol (RESP2, and RESP3 after ``HELLO 3``): commands from arrays of bulk
strings, and reply encoding.

SET and GET become the same SetCommand/GetCommand as text lines, and the other commands on
ids (MGET, EXISTS, DEL, ...) a KeyQuery; the commands about the connection or the whole
keyspace (PING, CLIENT, SCAN, ...) become a ServerCommand. The two versions differ here only
in a few reply types: RESP3 has its own null and map.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kayit.protocol.commands import (
    QUERY_NAMES,
    AuthCommand,
    Command,
    GetCommand,
    InvalidAuth,
    InvalidCommand,
    KeyQuery,
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
    "KEYS": (1, 1),
    "SCAN": (1, None),
    "MULTI": (0, 0),
    "EXEC": (0, 0),
    "DISCARD": (0, 0),
}
# (fewest, most) ids of each KeyQuery
_QUERY_ARITY: dict[str, tuple[int, int | None]] = {
    "MGET": (1, None),
    "EXISTS": (1, None),
    "STRLEN": (1, 1),
    "TYPE": (1, 1),
    "DEL": (1, None),
}
# Every command a RESP client may send (COMMAND COUNT): SET, GET, AUTH, UNLINK and the rest.
COMMAND_COUNT = 4 + len(SERVER_COMMANDS) + len(_QUERY_ARITY)


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
    if name == "UNLINK":  # DEL, as Redis's UNLINK is but for where the memory is freed
        return _parse_query("DEL", rest, "unlink")
    if name in QUERY_NAMES:
        return _parse_query(name, rest)
    arity = SERVER_COMMANDS.get(name)
    if arity is None:
        return InvalidCommand(f"unknown command '{name[:32]}'")
    fewest, most = arity
    if len(rest) < fewest or (most is not None and len(rest) > most):
        return InvalidCommand(f"wrong number of arguments for '{name.lower()}' command")
    return ServerCommand(name, rest)


def _parse_query(name: str, ids: list[bytes], sent: str = "") -> KeyQuery | InvalidCommand:
    fewest, most = _QUERY_ARITY[name]
    if len(ids) < fewest or (most is not None and len(ids) > most):
        return InvalidCommand(f"wrong number of arguments for '{sent or name.lower()}' command")
    for key in ids:
        problem = _key_problem(key)
        if problem:
            return InvalidCommand(problem)
    return KeyQuery(name, tuple(key.decode("utf-8") for key in ids))


@dataclass(frozen=True, slots=True)
class Hello:
    """``HELLO [protover [AUTH username password] [SETNAME name]]``: the handshake of RESP3
    clients, and of RESP2 ones that authenticate in it. ``protocol`` None: keep the current."""

    auth: AuthCommand | None
    protocol: int | None = None
    name: bytes | None = None


def parse_hello(args: list[bytes]) -> Hello | bytes:
    """The HELLO, or the error reply to it: a bad protocol version first, then a bad option,
    as Redis checks them."""
    protocol = None
    if args:
        if not args[0].isdigit():
            return error("Protocol version is not an integer or out of range")
        if args[0] not in (b"2", b"3"):
            return error("unsupported protocol version", kind="NOPROTO")
        protocol = int(args[0])
    options = args[1:]
    auth = None
    name = None
    position = 0
    while position < len(options):
        option = options[position].upper()
        left = len(options) - position - 1
        if option == b"AUTH" and left >= 2:
            auth = AuthCommand(options[position + 2], options[position + 1])
            position += 3
        elif option == b"SETNAME" and left >= 1:
            name = options[position + 1]
            position += 2
        else:
            shown = options[position][:32].decode("utf-8", "replace")
            return error(f"Syntax error in HELLO option '{shown}'")
    return Hello(auth, protocol, name)


# SCAN's cursor is an unsigned 64-bit integer, as Redis's.
MAX_CURSOR = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Scan:
    """``SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]``. ``pattern`` None: every id;
    ``strings`` False: a TYPE other than string, which no id has."""

    cursor: int
    pattern: bytes | None = None
    count: int = 10
    strings: bool = True


def parse_scan(args: list[bytes]) -> Scan | bytes:
    """The SCAN, or the error reply to it, as Redis words them."""
    if not args[0].isdigit() or int(args[0]) > MAX_CURSOR:
        return error("invalid cursor")
    scan = Scan(int(args[0]))
    options = args[1:]
    for position in range(0, len(options), 2):
        option = options[position].upper()
        if position + 1 >= len(options):
            return error("syntax error")
        value = options[position + 1]
        if option == b"MATCH":
            scan = replace(scan, pattern=None if value == b"*" else value)
        elif option == b"COUNT":
            if not value.isdigit():
                return error("value is not an integer or out of range")
            if int(value) < 1:
                return error("syntax error")
            scan = replace(scan, count=int(value))
        elif option == b"TYPE":
            scan = replace(scan, strings=value.lower() == b"string")
        else:
            return error("syntax error")
    return scan


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


def mapping(pairs: list[tuple[bytes, bytes]], protocol: int) -> bytes:
    """Keys and already encoded values: a map in RESP3, a flat array of pairs in RESP2."""
    parts = [part for key, value in pairs for part in (bulk(key), value)]
    if protocol == 3:
        return b"%%%d\r\n" % len(pairs) + b"".join(parts)
    return array(parts)


def null(protocol: int) -> bytes:
    return NULL3 if protocol == 3 else NULL2


EMPTY_ARRAY = b"*0\r\n"
EMPTY_MAP = b"%0\r\n"
NULL2 = b"$-1\r\n"
NULL3 = b"_\r\n"
OK = b"+OK\r\n"
