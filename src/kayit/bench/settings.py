"""What one ``kayit bench`` run does: its settings and the parsing of its flag values."""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from kayit.addresses import format_address

Protocol = Literal["text", "resp"]
PROTOCOLS: tuple[Protocol, ...] = ("text", "resp")

DEFAULT_HOST = "127.0.0.1"
MAX_VALUE_SIZE = 512 * 1024 * 1024  # Redis's own limit on one bulk string

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BenchSettings:
    # Connection n starts on address n modulo their number, and moves on to the next when it
    # fails.
    addresses: tuple[tuple[str, int], ...] = ((DEFAULT_HOST, 6666),)
    connections: int = 50
    requests: int = 100_000
    duration: float | None = None  # seconds; when given it wins over ``requests``
    pipeline: int = 1
    set_ratio: float = 1.0
    size: tuple[int, int] = (64, 64)  # value size range in bytes, both ends included
    keyspace: int = 100_000
    protocol: Protocol = "text"
    seed: int | None = None
    progress: bool = False
    password: str | None = field(default=None, repr=False)  # sent with AUTH on every connection
    tls: ssl.SSLContext | None = None  # for client ports that speak TLS (--client-tls)
    # The course's stress client (--course): one connection, one command at a time, bare
    # integer keys, a big SET every COURSE_BIG_EVERY commands, reconnect after an error.
    course: bool = False

    @property
    def host(self) -> str:
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    def where(self, index: int) -> str:
        return format_address(self.addresses[index])


# What --course fixes, as the course's own stress client does it.
COURSE_SET_RATIO = 0.8
COURSE_SIZE = (5, 2000)
COURSE_KEYSPACE = 10_000
COURSE_BIG_EVERY = 200  # every 200th command is a SET of COURSE_BIG_SIZE bytes
COURSE_BIG_SIZE = 1_000_000


def course_settings(
    address: tuple[str, int],
    requests: int,
    duration: float | None,
    seed: int | None,
    password: str | None,
    tls: ssl.SSLContext | None,
) -> BenchSettings:
    """The --course preset against one address."""
    return BenchSettings(
        addresses=(address,),
        connections=1,
        requests=requests,
        duration=duration,
        set_ratio=COURSE_SET_RATIO,
        size=COURSE_SIZE,
        keyspace=COURSE_KEYSPACE,
        seed=seed,
        password=password,
        tls=tls,
        course=True,
    )


def combine_addresses(
    hosts: Sequence[str] | None, ports: Sequence[int] | None
) -> tuple[tuple[str, int], ...]:
    """Every host with every port, hosts first; 127.0.0.1 and 6666 when none are given."""
    return tuple((host, port) for host in hosts or [DEFAULT_HOST] for port in ports or [6666])


def format_key(number: int) -> bytes:
    """The key for ``number``: ``key:`` and the number zero-padded to 9 digits."""
    return b"key:%09d" % number


def parse_size(text: str) -> tuple[int, int]:
    """``64`` -> (64, 64); ``5-2000`` -> (5, 2000). Sizes are 1..512 MiB; raises ValueError."""
    low_text, dash, high_text = text.strip().partition("-")
    low = _size(low_text, text)
    high = _size(high_text, text) if dash else low
    if low > high:
        raise ValueError(f"size range {text!r} runs backwards")
    return low, high


def _size(part: str, whole: str) -> int:
    part = part.strip()
    if not (part.isascii() and part.isdigit()):
        raise ValueError(f"not a size in bytes or a range like 5-2000: {whole!r}")
    value = int(part)
    if not 1 <= value <= MAX_VALUE_SIZE:
        raise ValueError(f"value size must be between 1 and {MAX_VALUE_SIZE} bytes: {whole!r}")
    return value


def parse_ratio(text: str) -> float:
    """A fraction 0..1; raises ValueError."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a fraction between 0 and 1: {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ValueError(f"must be between 0 and 1: {text!r}")
    return value


def parse_positive(text: str) -> int:
    """An integer of at least 1; raises ValueError."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1: {text!r}")
    return value


def flag_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type=``: its ValueError message becomes the usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert
