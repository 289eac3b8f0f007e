"""Error codes: the word after ``ERROR`` (text) or ``-`` (RESP) that tells a client what it may
conclude from a failed request. The one list of them, for the node's replies and for clients."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    BADREQUEST = "BADREQUEST"  # the request could not be parsed
    NOREPLICAS = "NOREPLICAS"  # a SET could not get TOLERANCE member copies
    UNAVAILABLE = "UNAVAILABLE"  # no holder of the current version answered a GET
    NOLEADER = "NOLEADER"  # no leader could be asked: the command was not sent
    TIMEOUT = "TIMEOUT"  # sent, but no answer came back: the outcome is unknown
    INTERNAL = "INTERNAL"  # an unexpected error
    NOAUTH = "NOAUTH"  # a command before AUTH, on a node that asks for a password
    WRONGPASS = "WRONGPASS"  # AUTH with a wrong password
    DENIED = "DENIED"  # protected mode: a client from another host, and no password set
    LIMIT = "LIMIT"  # a limit of the client port was reached (the reason says which)

    @property
    def nothing_done(self) -> bool:
        """True when the request certainly changed nothing; False when its outcome is unknown
        (a SET answered so may still have taken effect)."""
        return self in _NOTHING_DONE


_NOTHING_DONE = frozenset(
    {
        ErrorCode.BADREQUEST,
        ErrorCode.NOREPLICAS,
        ErrorCode.UNAVAILABLE,
        ErrorCode.NOLEADER,
        ErrorCode.NOAUTH,
        ErrorCode.WRONGPASS,
        ErrorCode.DENIED,
        ErrorCode.LIMIT,
    }
)
_BY_NAME = {code.value: code for code in ErrorCode}


def error_code(reply_line: bytes | str) -> ErrorCode | None:
    """The code of a text reply ``ERROR <CODE> <reason>``. None for any other line, and for an
    ERROR without a known code: a client must take that outcome as unknown. (Over RESP the code
    is the error's first word, ``-NOREPLICAS ...``; ``-ERR`` is a bad request, as in Redis.)"""
    line = reply_line.decode("utf-8", "replace") if isinstance(reply_line, bytes) else reply_line
    if not line.startswith("ERROR "):
        return None
    word = line[len("ERROR ") :].split(" ", 1)[0].rstrip("\r\n")
    return _BY_NAME.get(word)
