"""Redis's glob patterns (KEYS, SCAN MATCH) as regular expressions.

``*`` any run of characters, ``?`` one character, ``[abc]``, ``[a-z]`` and ``[^abc]`` one of
(or none of) a set, ``\\x`` the character x itself. A ``[`` never closed stands for itself.
Ids are UTF-8, so a pattern is matched on characters; bytes of a pattern that are not UTF-8
match no id.
"""

from __future__ import annotations

import re
from collections.abc import Callable


def glob_matcher(pattern: bytes) -> Callable[[str], bool]:
    """A test of whether an id matches ``pattern`` whole."""
    text = pattern.decode("utf-8", "surrogateescape")  # a stray byte matches no valid id
    compiled = re.compile(_translate(text), re.DOTALL)
    return lambda message_id: compiled.fullmatch(message_id) is not None


def _translate(pattern: str) -> str:
    parts: list[str] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        position += 1
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char == "\\" and position < len(pattern):
            parts.append(re.escape(pattern[position]))
            position += 1
        elif char == "[":
            end, members = _bracket(pattern, position)
            if end < 0:
                parts.append(re.escape(char))
            else:
                parts.append(members)
                position = end + 1
        else:
            parts.append(re.escape(char))
    return "".join(parts)


def _bracket(pattern: str, start: int) -> tuple[int, str]:
    """The set that opens at ``start`` (just past its ``[``): where its ``]`` is, and the
    set as a regular expression; (-1, "") when it never closes."""
    negate = start < len(pattern) and pattern[start] == "^"
    position = start + 1 if negate else start
    members: list[str] = []
    while position < len(pattern):
        char = pattern[position]
        if char == "]":
            body = "".join(members)
            if not body:
                return position, "[^\\s\\S]" if not negate else "[\\s\\S]"
            return position, f"[{'^' if negate else ''}{body}]"
        if char == "\\" and position + 1 < len(pattern):
            members.append(re.escape(pattern[position + 1]))
            position += 2
        elif (
            position + 2 < len(pattern)
            and pattern[position + 1] == "-"
            and (pattern[position + 2] != "]")
        ):
            low, high = sorted((char, pattern[position + 2]))  # Redis takes [z-a] as [a-z]
            members.append(f"{re.escape(low)}-{re.escape(high)}")
            position += 3
        else:
            members.append(re.escape(char))
            position += 1
    return -1, ""
