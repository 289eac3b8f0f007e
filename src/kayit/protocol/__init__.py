"""The client text protocol: framing, parsing and reply encoding. No I/O here."""

from kayit.protocol.commands import (
    Command,
    GetCommand,
    InvalidCommand,
    SetCommand,
    parse_command,
)
from kayit.protocol.errors import ErrorCode, error_code
from kayit.protocol.framing import BrokenResp, OverlongLine, RequestFramer, RespArray
from kayit.protocol.replies import NOT_FOUND, OK, encode_error, encode_value

__all__ = [
    "NOT_FOUND",
    "OK",
    "BrokenResp",
    "Command",
    "ErrorCode",
    "GetCommand",
    "InvalidCommand",
    "OverlongLine",
    "RequestFramer",
    "RespArray",
    "SetCommand",
    "encode_error",
    "encode_value",
    "error_code",
    "parse_command",
]
