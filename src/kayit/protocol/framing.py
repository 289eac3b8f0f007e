"""Split a byte stream into lines, with a bound on how long one line may grow."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_LINE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """Stands in for a line that passed the limit; its bytes were discarded up to its newline."""

    limit: int


class LineFramer:
    """Turns received chunks into complete lines (LF or CRLF, terminator removed).

    Memory is bounded by ``max_line``: once a line passes it, the rest of that line is
    skipped as it arrives and a single ``OverlongLine`` takes its place.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> list[bytes | OverlongLine]:
        lines: list[bytes | OverlongLine] = []
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._keep(chunk[start:], lines)
                return lines
            piece = chunk[start:newline]
            start = newline + 1
            if self._discarding:
                self._discarding = False
                continue
            if len(self._buffer) + len(piece) > self.max_line + 1:  # +1: a CR may end it
                self._buffer.clear()
                lines.append(OverlongLine(self.max_line))
                continue
            if self._buffer:
                self._buffer += piece
                line = bytes(self._buffer)
                self._buffer.clear()
            else:
                line = piece
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                lines.append(OverlongLine(self.max_line))
            else:
                lines.append(line)

    def _keep(self, rest: bytes, lines: list[bytes | OverlongLine]) -> None:
        if self._discarding or not rest:
            return
        if len(self._buffer) + len(rest) > self.max_line + 1:
            self._buffer.clear()
            self._discarding = True
            lines.append(OverlongLine(self.max_line))
            return
        self._buffer += rest

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)
