"""Parse one client line into a command.

Grammar (command names case-insensitive):
    SET <id> <message>   the message is the rest of the line after one space, kept exactly
    GET <id>
    AUTH <password>      the password is the rest of the line after one space, kept exactly
    EXISTS <id>          1 if the id is set, else 0
    DEL <id>             1 if the id was set (and is deleted now), else 0
    STRLEN <id>          the message's length in bytes, 0 if the id is not set
An id is 1..MAX_ID_BYTES bytes of UTF-8 without whitespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_ID_BYTES = 200


@dataclass(frozen=True, slots=True)
class SetCommand:
    id: str
    message: bytes


@dataclass(frozen=True, slots=True)
class GetCommand:
    id: str


@dataclass(frozen=True, slots=True)
class ExistsCommand:
    """Whether an id is set: read from the committed index, the message is not read."""

    id: str


@dataclass(frozen=True, slots=True)
class DeleteCommand:
    """DEL of one id: a versioned delete, committed as a SET is."""

    id: str


@dataclass(frozen=True, slots=True)
class KeyQuery:
    """A command on one or more ids answered from the GETs (MGET, STRLEN), EXISTSs (EXISTS,
    TYPE) or DELs (DEL) of each."""

    name: str  # one of QUERY_NAMES
    ids: tuple[str, ...]


QUERY_NAMES = frozenset({"MGET", "EXISTS", "STRLEN", "TYPE", "DEL"})


@dataclass(frozen=True, slots=True)
class AuthCommand:
    """``AUTH [username] password``; a username comes only over RESP, as Redis takes it."""

    password: bytes = field(repr=False)
    username: bytes | None = None


@dataclass(frozen=True, slots=True)
class InvalidCommand:
    """A line that cannot be carried out; ``reason`` goes back to the client after ERROR."""

    reason: str


@dataclass(frozen=True, slots=True)
class InvalidAuth(InvalidCommand):
    """A malformed AUTH: answered as such even before the client has authenticated."""


Command = SetCommand | GetCommand | AuthCommand | KeyQuery | InvalidCommand


def parse_command(line: bytes) -> Command:
    """Parse a line without its terminator. Never raises: bad input becomes InvalidCommand."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidCommand("line is not valid UTF-8")
    name, _, rest = text.partition(" ")
    verb = name.upper() if name.isascii() else name  # so no Unicode letter folds into SET
    if verb == "SET":
        return _parse_set(rest)
    if verb == "GET":
        return _parse_get(rest)
    if verb == "AUTH":
        if not rest:
            return InvalidAuth("AUTH needs a password: AUTH <password>")
        return AuthCommand(rest.encode("utf-8"))
    if verb in ("EXISTS", "STRLEN", "DEL"):
        parsed = _parse_get(rest, verb)
        return KeyQuery(verb, (parsed.id,)) if isinstance(parsed, GetCommand) else parsed
    if not text.strip():
        return InvalidCommand("empty line; expected SET <id> <message> or GET <id>")
    return InvalidCommand(f"unknown command {_quote(name)}; expected SET or GET")


def _parse_set(rest: str) -> Command:
    key, separator, message = rest.partition(" ")
    problem = validate_id(key)
    if problem:
        return InvalidCommand(problem)
    if not separator or not message:
        return InvalidCommand("SET needs a message: SET <id> <message>")
    return SetCommand(key, message.encode("utf-8"))


def _parse_get(rest: str, verb: str = "GET") -> GetCommand | InvalidCommand:
    problem = validate_id(rest)
    if problem:
        if rest and not rest[0].isspace() and any(c.isspace() for c in rest):
            return InvalidCommand(f"{verb} takes one id: {verb} <id>")
        return InvalidCommand(problem)
    return GetCommand(rest)


def validate_id(key: str) -> str | None:
    """The reason ``key`` is not a valid id, or None when it is."""
    if not key:
        return "missing id"
    if any(c.isspace() for c in key):
        return "id must not contain whitespace"
    if len(key.encode("utf-8")) > MAX_ID_BYTES:
        return f"id longer than {MAX_ID_BYTES} bytes"
    return None


def _quote(name: str, limit: int = 32) -> str:
    shown = name if len(name) <= limit else name[:limit] + "..."
    return repr(shown)
