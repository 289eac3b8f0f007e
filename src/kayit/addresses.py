"""The one way every ``kayit`` command reads an address: ``HOST``, ``HOST:PORT``, ``:PORT`` or
``PORT``, with ``[IPv6]`` and ``[IPv6]:PORT`` for IPv6 literals (a bare IPv6 literal, having
several colons, is read as a host). What is left out is the command's default host or port."""

from __future__ import annotations

import re

Address = tuple[str, int]
DEFAULT_HOST = "127.0.0.1"

_PORT = re.compile(r"[0-9]+")
_HOST = re.compile(r"[A-Za-z0-9._-]+")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9._-]+)?")


class AddressError(ValueError):
    """A text that is no address; the message names it."""


def parse_address(text: str, default_port: int, default_host: str = DEFAULT_HOST) -> Address:
    entry = text.strip()
    if not entry:
        raise AddressError("empty address")
    if entry.startswith("["):
        literal, bracket, rest = entry[1:].partition("]")
        if not bracket or not _IPV6.fullmatch(literal) or rest[:1] not in ("", ":"):
            raise AddressError(f"not HOST:PORT: {entry!r}")
        return literal, _port(rest[1:], entry) if rest else default_port
    if _PORT.fullmatch(entry):
        return default_host, _port(entry, entry)
    if entry.count(":") > 1:
        if not _IPV6.fullmatch(entry):
            raise AddressError(f"not HOST:PORT: {entry!r}")
        return entry, default_port
    host, colon, port = entry.partition(":")
    if host and not _HOST.fullmatch(host):
        raise AddressError(f"not HOST:PORT: {entry!r}")
    return host or default_host, _port(port, entry) if colon else default_port


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(text: str, entry: str) -> int:
    if not _PORT.fullmatch(text):
        raise AddressError(f"not a port number in {entry!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise AddressError(f"port out of range in {entry!r}")
    return port
