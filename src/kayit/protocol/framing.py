"""Split the client byte stream into requests: text lines, or RESP arrays (Redis's protocol).

Like Redis, the first byte of each request tells them apart: ``*`` starts a RESP array,
anything else is a line. Memory stays bounded by ``max_line`` whichever protocol is spoken, and
so does the work per byte: a line is searched for its newline once, and the complete elements of
an array still arriving are taken out of the buffer, so that a request sent a byte at a time is
not parsed again from its start at every byte.
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


@dataclass(slots=True)
class _ArrayInProgress:
    """A RESP array whose header and first elements arrived, and whose rest has not yet."""

    left: int  # bulk strings still to come
    args: list[bytes]
    size: int = 0  # bytes of the bulk strings taken so far


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
        self._array: _ArrayInProgress | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of the unfinished request held until its end arrives: those not framed yet,
        and the elements of a RESP array taken out of them already."""
        return len(self._buffer) + (self._array.size if self._array is not None else 0)

    @property
    def pending_resp(self) -> bool:
        """Whether the unfinished request is a RESP array (else a text line)."""
        return self._array is not None or (bool(self._buffer) and self._buffer[0] == 0x2A)

    def abandon(self) -> None:
        """Drop the unfinished request, and frame nothing more: the connection is closing."""
        self._buffer = bytearray()
        self._array = None
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
            if self._array is not None or buffer[position] == 0x2A:  # '*'
                parsed = self._take_resp(buffer, position)
                if isinstance(parsed, BrokenResp):
                    requests.append(parsed)
                    self._broken = True
                    self._array = None
                    position = len(buffer)
                    break
                position = parsed
                array = self._array
                if array is None or array.left:
                    break  # incomplete: what is complete of it left the buffer
                self._array = None
                if array.args:
                    requests.append(RespArray(array.args))
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

    def _take_resp(self, buffer: bytearray, position: int) -> int | BrokenResp:
        """Take what has arrived of a RESP array of bulk strings at ``position``: its header,
        if no array is in progress, then each complete bulk string. Returns where the next
        byte to read is (``_array`` says whether the array is complete), or BrokenResp."""
        array = self._array
        if array is None:
            header = _parse_header(buffer, position, "*", MAX_RESP_ARGS)
            if not isinstance(header, tuple):
                return position if header is None else header
            count, position = header
            array = self._array = _ArrayInProgress(count, [])
        while array.left:
            if position >= len(buffer):
                break
            bulk = _parse_header(buffer, position, "$", self.max_line)
            if bulk is None:
                break
            if isinstance(bulk, BrokenResp):
                return bulk
            length, body = bulk
            if array.size + length > self.max_line:
                return BrokenResp(f"request longer than {self.max_line} bytes")
            end = body + length
            if len(buffer) < end + 2:
                break
            if buffer[end : end + 2] != b"\r\n":
                return BrokenResp("bulk string not followed by CRLF")
            array.args.append(bytes(buffer[body:end]))
            array.size += length
            array.left -= 1
            position = end + 2
        return position


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
