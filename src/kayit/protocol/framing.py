"""Split the client byte stream into requests: text lines, or RESP arrays (Redis's protocol).

Like Redis, the first byte of each request tells them apart: ``*`` starts a RESP array,
anything else is a line. Memory stays bounded by ``max_line`` whichever protocol is spoken.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_LINE = 8 * 1024 * 1024
MAX_RESP_ARGS = 1024
_RESP_HEADER_MAX = 32  # "*<count>\r\n" or "$<length>\r\n" never needs more bytes than this


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """Stands in for a line that passed the limit; its bytes were discarded up to its newline."""

    limit: int


@dataclass(frozen=True, slots=True)
class RespArray:
    """One RESP request: the command name and its arguments, as bytes."""

    args: list[bytes]


@dataclass(frozen=True, slots=True)
class BrokenResp:
    """Malformed RESP: the stream cannot be resynchronised, so the connection must close."""

    reason: str


Request = bytes | RespArray | OverlongLine | BrokenResp


class RequestFramer:
    """Turns received chunks into complete requests. A text line loses its LF or CRLF; once a
    line passes ``max_line`` the rest of it is skipped as it arrives and one OverlongLine takes
    its place. After a BrokenResp nothing more is framed."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer known to hold no newline
        self._discarding = False
        self._broken = False

    @property
    def pending_bytes(self) -> int:
        """Bytes of the unfinished request held until its end arrives."""
        return len(self._buffer)

    @property
    def pending_resp(self) -> bool:
        """Whether the unfinished request is a RESP array (else a text line)."""
        return bool(self._buffer) and self._buffer[0] == 0x2A

    def abandon(self) -> None:
        """Drop the unfinished request, and frame nothing more: the connection is closing."""
        self._buffer = bytearray()
        self._searched = 0
        self._broken = True

    def feed(self, chunk: bytes) -> list[Request]:
        if self._broken:
            return []
        if self._discarding:
            newline = chunk.find(b"\n")
            if newline < 0:
                return []
            self._discarding = False
            chunk = chunk[newline + 1 :]
        buffer = self._buffer
        buffer += chunk
        requests: list[Request] = []
        position = 0
        while position < len(buffer):
            if buffer[position] == 0x2A:  # '*'
                parsed = _parse_resp(buffer, position, self.max_line)
                if parsed is None:
                    break
                if isinstance(parsed, BrokenResp):
                    requests.append(parsed)
                    self._broken = True
                    position = len(buffer)
                    break
                args, position = parsed
                if args:
                    requests.append(RespArray(args))
                continue
            newline = buffer.find(b"\n", max(position, self._searched))
            if newline < 0:
                if len(buffer) - position > self.max_line + 1:  # +1: a CR may end it
                    requests.append(OverlongLine(self.max_line))
                    self._discarding = True
                    position = len(buffer)
                break
            end = newline - 1 if newline > position and buffer[newline - 1] == 0x0D else newline
            if end - position > self.max_line:
                requests.append(OverlongLine(self.max_line))
            else:
                requests.append(bytes(buffer[position:end]))
            position = newline + 1
        del buffer[:position]
        self._searched = len(buffer)
        return requests


def _parse_resp(
    buffer: bytearray, start: int, max_line: int
) -> tuple[list[bytes], int] | BrokenResp | None:
    """One RESP array of bulk strings at ``start``: (args, end), BrokenResp, or None while
    incomplete."""
    header = _parse_header(buffer, start, "*", MAX_RESP_ARGS)
    if not isinstance(header, tuple):
        return header
    count, position = header
    args: list[bytes] = []
    total = 0
    for _ in range(count):
        if position >= len(buffer):
            return None
        bulk = _parse_header(buffer, position, "$", max_line)
        if not isinstance(bulk, tuple):
            return bulk
        length, body = bulk
        total += length
        if total > max_line:
            return BrokenResp(f"request longer than {max_line} bytes")
        end = body + length
        if len(buffer) < end + 2:
            return None
        if buffer[end : end + 2] != b"\r\n":
            return BrokenResp("bulk string not followed by CRLF")
        args.append(bytes(buffer[body:end]))
        position = end + 2
    return args, position


def _parse_header(
    buffer: bytearray, start: int, kind: str, limit: int
) -> tuple[int, int] | BrokenResp | None:
    """``<kind><number>\\r\\n`` at ``start``: (number, where the next part starts)."""
    if buffer[start] != ord(kind):
        return BrokenResp(f"expected '{kind}', got {chr(buffer[start])!r}")
    end = buffer.find(b"\r\n", start, start + _RESP_HEADER_MAX)
    if end < 0:
        if len(buffer) - start >= _RESP_HEADER_MAX:
            return BrokenResp(f"invalid {'multibulk' if kind == '*' else 'bulk'} length")
        return None
    digits = bytes(buffer[start + 1 : end])
    if not digits.isdigit() or int(digits) > limit:
        return BrokenResp(f"invalid {'multibulk' if kind == '*' else 'bulk'} length")
    return int(digits), end + 2
