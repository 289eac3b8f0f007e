"""Reply lines of the text protocol. Every reply is exactly one line."""

from kayit.protocol.errors import ErrorCode

OK = b"OK\n"
NOT_FOUND = b"NOT_FOUND\n"


def encode_value(message: bytes) -> bytes:
    if b"\n" in message:  # stored over RESP; a text reply must stay one line
        return encode_error(ErrorCode.BADREQUEST, "the message holds a newline; read it over RESP")
    return message + b"\n"


def encode_error(code: ErrorCode, reason: str) -> bytes:
    # A reason must never break the one-line rule, whatever it quotes.
    flat = " ".join(reason.split())
    return f"ERROR {code} ".encode() + flat.encode("utf-8", "replace") + b"\n"
