"""What INFO and CLIENT LIST tell of a node and its clients, in Redis's formats.

INFO's sections are Redis's standard ones, with the numbers a node has (the rest of Redis's
fields describe machinery kayit does not have, such as RDB saves and expiring keys), and one
of kayit's own, ``Cluster``. Counters are kept per read and per write of a connection, not per
command, so the SET and GET path pays nothing for them.
"""

from __future__ import annotations

import os
import platform
import resource
import struct
import time
from dataclasses import dataclass, field

from kayit import __version__
from kayit.cluster.leader import Leader

SECTIONS = (
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cluster",
    "keyspace",
)
_EVERY = frozenset({b"", b"all", b"default", b"everything"})


def sections_asked(args: list[bytes]) -> list[str]:
    """The sections ``INFO [section ...]`` names, in INFO's order; none, ``all``, ``default``
    or ``everything``: every one. A name INFO does not have is left out, as Redis does."""
    names = {arg.lower() for arg in args} or {b""}
    if names & _EVERY:
        return list(SECTIONS)
    return [section for section in SECTIONS if section.encode() in names]


@dataclass(slots=True)
class ClientStats:
    """Counters of a node's client ports since it started (INFO's stats)."""

    started: float = field(default_factory=time.monotonic)
    connections_received: int = 0
    rejected: int = 0  # refused: protected mode or max clients
    commands: int = 0  # requests read, whatever became of them
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What INFO reports of one node, gathered when it is asked."""

    client_port: int
    address: str  # gRPC
    leader: Leader | None  # while this node leads
    leader_address: str | None
    connected_clients: int
    max_clients: int
    stats: ClientStats
    keys: int | None  # ids in the leader's index; None: no leader answered


def info(facts: NodeFacts, sections: list[str]) -> bytes:
    lines: list[str] = []
    for section in sections:
        if lines:
            lines.append("")
        lines.append(f"# {section.capitalize()}")
        lines += _SECTION[section](facts)
    return "".join(line + "\r\n" for line in lines).encode()


def _server(facts: NodeFacts) -> list[str]:
    uptime = int(time.monotonic() - facts.stats.started)
    return [
        f"kayit_version:{__version__}",
        f"os:{platform.system()} {platform.release()} {platform.machine()}",
        f"arch_bits:{struct.calcsize('P') * 8}",
        f"process_id:{os.getpid()}",
        f"tcp_port:{facts.client_port}",
        f"uptime_in_seconds:{uptime}",
        f"uptime_in_days:{uptime // 86400}",
        f"node:{facts.address}",
    ]


def _clients(facts: NodeFacts) -> list[str]:
    return [
        f"connected_clients:{facts.connected_clients}",
        f"maxclients:{facts.max_clients}",
        "blocked_clients:0",  # no command blocks
    ]


def _memory(facts: NodeFacts) -> list[str]:
    # The process's resident memory: Python keeps no cheaper count of what it allocated.
    resident = _resident_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return [
        f"used_memory:{resident}",  # first: redis-cli --stat finds the first "used_memory"
        f"used_memory_human:{_human(resident)}",
        f"used_memory_rss:{resident}",
        f"used_memory_peak:{max(peak, resident)}",
        f"used_memory_peak_human:{_human(max(peak, resident))}",
        "maxmemory:0",
    ]


def _persistence(facts: NodeFacts) -> list[str]:
    # Every copy is written to its own file before it is acknowledged (see --fsync): there is
    # nothing to load at start, and no RDB or AOF.
    return ["loading:0", "async_loading:0", "rdb_bgsave_in_progress:0", "aof_enabled:0"]


def _stats(facts: NodeFacts) -> list[str]:
    stats = facts.stats
    return [
        f"total_connections_received:{stats.connections_received}",
        f"total_commands_processed:{stats.commands}",
        f"total_net_input_bytes:{stats.bytes_in}",
        f"total_net_output_bytes:{stats.bytes_out}",
        f"rejected_connections:{stats.rejected}",
    ]


def _replication(facts: NodeFacts) -> list[str]:
    # Redis's words: a node that does not lead forwards SETs and GETs to the one that does.
    if facts.leader is None:
        up = "up" if facts.leader_address else "down"
        return ["role:slave", f"master_link_status:{up}"]
    others = sum(1 for m in facts.leader.member_counts() if m.alive)  # the leader not counted
    return ["role:master", f"connected_slaves:{others}"]


def _cluster(facts: NodeFacts) -> list[str]:
    leader = facts.leader
    if leader is None:
        return [f"leader:{facts.leader_address or 'unknown'}"]
    members = leader.member_counts()
    return [
        f"leader:{facts.address}",
        f"tolerance:{leader.tolerance}",
        f"term:{leader.term}",
        f"members:{len(members)}",
        f"members_alive:{sum(1 for m in members if m.alive)}",
        # Deleted ids some former holder of which has not yet deleted its copy.
        f"tombstones:{leader.metadata.tombstone_count}",
    ]


def _keyspace(facts: NodeFacts) -> list[str]:
    # As Redis: a database without keys is not listed.
    return [f"db0:keys={facts.keys},expires=0,avg_ttl=0"] if facts.keys else []


_SECTION = {
    "server": _server,
    "clients": _clients,
    "memory": _memory,
    "persistence": _persistence,
    "stats": _stats,
    "replication": _replication,
    "cluster": _cluster,
    "keyspace": _keyspace,
}


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _human(size: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One client connection, as CLIENT LIST shows it."""

    id: int
    addr: str
    laddr: str
    fd: int
    name: str
    age: int  # seconds connected
    idle: int  # seconds since it last sent anything
    in_multi: bool
    protocol: int
    lib_name: str
    lib_ver: str


def client_line(client: ClientInfo) -> str:
    return (
        f"id={client.id} addr={client.addr} laddr={client.laddr} fd={client.fd} "
        f"name={client.name} age={client.age} idle={client.idle} flags=N db=0 sub=0 psub=0 "
        f"ssub=0 multi={0 if client.in_multi else -1} resp={client.protocol} "
        f"lib-name={client.lib_name} lib-ver={client.lib_ver}"
    )
