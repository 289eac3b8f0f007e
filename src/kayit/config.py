"""NodeConfig: everything a node needs to start, from flags and tolerance.conf."""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kayit.addresses import format_address
from kayit.protocol.framing import DEFAULT_MAX_LINE
from kayit.storage.disk import FsyncPolicy, IoMode

if TYPE_CHECKING:
    from kayit.tls.identity import TlsIdentity

DEFAULT_GRPC_PORT = 5555
DEFAULT_CLIENT_PORT = 6666
# A node's own client port, when not given, is its gRPC port plus this: 5555 -> 6666, 5556 -> 6667.
CLIENT_PORT_OFFSET = DEFAULT_CLIENT_PORT - DEFAULT_GRPC_PORT
DEFAULT_METRICS_PORT = 7777
# A node's metrics port, when not given, is its gRPC port plus this: 5555 -> 7777.
METRICS_PORT_OFFSET = DEFAULT_METRICS_PORT - DEFAULT_GRPC_PORT
# gRPC ports a node without --grpc-port searches, from 5555: the course's ports.
COURSE_GRPC_PORTS = range(DEFAULT_GRPC_PORT, DEFAULT_GRPC_PORT + 64)
DEFAULT_TOLERANCE = 2
MAX_TOLERANCE = 64
TOLERANCE_FILE = "tolerance.conf"

# What a client connection may cost the node; one client must not starve the others, nor
# grow the node's memory without bound. The course's stress client (one command at a time,
# messages up to 1 MB) never meets any of them.
DEFAULT_MAX_CLIENTS = 10_000  # as Redis's maxclients
DEFAULT_CLIENT_TIMEOUT = 0.0  # seconds an idle connection is kept; 0: for ever, as Redis
# Replies a client has not read yet (queued to its socket, or computed and waiting their turn)
# before it is disconnected: Redis's client-output-buffer-limit, for every client.
DEFAULT_CLIENT_OUTPUT_LIMIT = 32 * 1024 * 1024
# Requests still arriving (unfinished lines and RESP arrays) buffered across every client
# connection; past it the connection holding the most is refused.
DEFAULT_PARTIAL_LINE_BUDGET = 32 * 1024 * 1024

_MAX_PORT = 65535
_TOLERANCE_LINE = re.compile(r"^\s*(?:tolerance\s*=\s*)?([0-9]+)\s*$", re.IGNORECASE)


def node_name(grpc_port: int) -> str:
    """The name of a node's dir in DATA_DIR, and of its certificate in a TLS dir."""
    return f"node-{grpc_port}"


class ConfigError(Exception):
    """A setting that a node cannot start with; the message says which and why."""


class Role(enum.StrEnum):
    LEADER = "leader"  # may form a new cluster (--leader)
    MEMBER = "member"  # only ever joins one (--join, or --peers without --leader)
    AUTO = "auto"  # the course's way: leader if it gets the first gRPC port, else member


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The limits of the client ports; see the defaults above."""

    max_clients: int = DEFAULT_MAX_CLIENTS
    timeout: float = DEFAULT_CLIENT_TIMEOUT
    output_limit: int = DEFAULT_CLIENT_OUTPUT_LIMIT
    partial_line_budget: int = DEFAULT_PARTIAL_LINE_BUDGET


@dataclass(frozen=True, slots=True)
class NodeConfig:
    role: Role = Role.AUTO
    host: str = "127.0.0.1"  # where the ports listen, unless client_host or grpc_host says
    client_host: str | None = None  # where the client ports listen; None: host
    grpc_host: str | None = None  # where the gRPC port listens; None: host
    # The gRPC address (HOST:PORT) this node announces to the others, who dial it there; None:
    # the gRPC host and port. Needed when that host is not one they can reach: 0.0.0.0, or
    # the address of a container behind a published port.
    advertise: str | None = None
    grpc_port: int | None = None  # None: the first free port from DEFAULT_GRPC_PORT
    client_port: int | None = None  # None: the gRPC port + CLIENT_PORT_OFFSET
    # A client port every node of one host listens on too (SO_REUSEPORT). None: 6666 on the
    # course's ports (see client_ports), else none; 0: none.
    shared_client_port: int | None = None
    join: str | None = None  # gRPC addresses (comma-separated) of nodes to join through
    # gRPC addresses of the cluster's other nodes: asked to admit this node when it has no
    # cluster state; with LEADER it forms a new cluster only if none of them is in one.
    peers: tuple[str, ...] = ()
    data_dir: Path = Path("data")
    tolerance: int = DEFAULT_TOLERANCE
    io_mode: IoMode = IoMode.BUFFERED
    fsync: FsyncPolicy = FsyncPolicy.EVERYSEC
    max_line: int = DEFAULT_MAX_LINE
    heartbeat: float = 0.1  # the Raft tick: elections start after 10-20 silent ones
    dead_after: float = 3.0
    report_every: float = 10.0
    rpc_timeout: float = 5.0
    store_timeout: float = 0.5  # base of a member copy's deadline; its bytes add to it
    repair_after: float = 30.0
    repair_rate: float = 1000.0
    scrub_every: float = 3600.0
    cache_bytes: int = 16 * 1024 * 1024
    # Mutual TLS on the gRPC port and to every peer; None: plain, and loopback only.
    tls: TlsIdentity | None = None
    client_tls: bool = False  # the client ports speak TLS too, with the node's certificate
    # The password clients must give (AUTH) before any command; None: none is asked for, and
    # only loopback clients are served unless ``insecure``.
    requirepass: bytes | None = field(default=None, repr=False)
    insecure: bool = False  # serve beyond loopback without authentication
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    # The HTTP port of /metrics and the dashboard. None: the gRPC port + METRICS_PORT_OFFSET,
    # given up with a warning if taken (a port given is an error if taken); 0: none.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.client_tls and self.tls is None:
            raise ConfigError("--client-tls needs --tls-dir: the node's certificate is in it")
        if self.requirepass is not None:
            check_password(self.requirepass, "--requirepass")
        if self.advertise is not None:
            check_advertise(self.advertise)
        elif is_unspecified(self.grpc_listen_host):
            # A peer that dials 0.0.0.0 or :: reaches itself, not this node.
            flag = "--host" if self.grpc_host is None else "--grpc-host"
            raise ConfigError(
                f"{flag} {self.grpc_listen_host} listens on every address, but the other nodes "
                f"cannot reach this node at {self.grpc_listen_host}: give --advertise "
                "HOST:PORT, the address they reach it by"
            )
        if self.client_limits.partial_line_budget < self.max_line:
            raise ConfigError(
                f"--partial-line-budget ({self.client_limits.partial_line_budget}) must be at "
                f"least --max-line ({self.max_line}): else one line of the longest kind is "
                "refused"
            )

    @property
    def client_listen_host(self) -> str:
        return self.host if self.client_host is None else self.client_host

    @property
    def grpc_listen_host(self) -> str:
        return self.host if self.grpc_host is None else self.grpc_host

    def announced_address(self, grpc_port: int) -> str:
        """The gRPC address the node that got ``grpc_port`` gives the others to reach it by."""
        return self.advertise or format_address((self.grpc_listen_host, grpc_port))

    def node_dir(self, grpc_port: int) -> Path:
        return self.data_dir / node_name(grpc_port)

    def client_ports(self, grpc_port: int) -> ClientPorts:
        """The client ports of the node that got ``grpc_port``. A node on the course's ports
        (gRPC 5555.., no client port given) also shares 6666, so that a client of 6666 is
        served while any of them lives."""
        own = self.client_port
        if own is None:
            own = grpc_port + CLIENT_PORT_OFFSET
            if own > _MAX_PORT:
                raise ConfigError(
                    f"client port {own} (gRPC port {grpc_port} + {CLIENT_PORT_OFFSET}) is out "
                    "of range; give --client-port"
                )
        shared = self.shared_client_port
        if shared is None:
            course = self.client_port is None and grpc_port in COURSE_GRPC_PORTS
            shared = DEFAULT_CLIENT_PORT if course else 0
        return ClientPorts(own, shared or None)


@dataclass(frozen=True, slots=True)
class ClientPorts:
    own: int  # this node's alone
    shared: int | None  # listened on by every node of the host, with SO_REUSEPORT; may be own


def is_unspecified(host: str) -> bool:
    """Whether ``host`` is 0.0.0.0 or :: (in brackets or not): every address of the host."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_unspecified
    except ValueError:
        return False  # a name


def check_advertise(address: str) -> str:
    """``address`` if it is HOST:PORT with a host the other nodes can dial."""
    host, colon, port = address.rpartition(":")
    if not (host and colon and port.isdigit() and 1 <= int(port) <= _MAX_PORT):
        raise ConfigError(f"--advertise {address}: expected HOST:PORT, such as node1:5555")
    if is_unspecified(host):
        raise ConfigError(
            f"--advertise {address}: {host} is every address of this host, not one the other "
            "nodes can reach it by: give this host's name or address"
        )
    return address


def parse_tolerance(text: str, source: str = TOLERANCE_FILE) -> int:
    """``TOLERANCE=2`` in any case, or a bare integer; blank lines and # comments are skipped."""
    values = [line.split("#", 1)[0] for line in text.splitlines() if line.split("#", 1)[0].strip()]
    if len(values) != 1:
        raise ConfigError(f"{source}: expected one line like TOLERANCE=2, found {len(values)}")
    match = _TOLERANCE_LINE.match(values[0])
    if not match:
        raise ConfigError(f"{source}: cannot read {values[0].strip()!r}; expected TOLERANCE=2")
    return check_tolerance(int(match.group(1)), source)


def check_tolerance(value: int, source: str) -> int:
    if not 0 <= value <= MAX_TOLERANCE:
        raise ConfigError(f"{source}: TOLERANCE must be between 0 and {MAX_TOLERANCE}, not {value}")
    return value


def read_tolerance(directory: Path) -> int | None:
    """TOLERANCE from ``directory/tolerance.conf``; None when there is no such file."""
    path = directory / TOLERANCE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    return parse_tolerance(text, str(path))


def check_password(password: bytes, source: str) -> bytes:
    if not password:
        raise ConfigError(f"{source}: the password is empty")
    if b"\n" in password or b"\r" in password:
        raise ConfigError(f"{source}: the password must be one line")
    return password


def read_password_file(path: Path) -> bytes:
    """The first line of ``path``, without its line ending: the client password."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: {error}") from error
    first = text.splitlines()[0] if text else b""
    return check_password(first, str(path))
