"""Finding a free port, the way the course template does: try 5555, then 5556, ...; and free
ports for tests and benchmarks that start nodes side by side."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import time
from pathlib import Path

from kayit.config import CLIENT_PORT_OFFSET, COURSE_GRPC_PORTS

# Below the kernel's ephemeral range (32768 and up by default), where outgoing connections take
# their ports, and below the chaos runs' 20000-30000. A port handed out reserves its derived
# client port (port + 1111) too, since a node given only a gRPC port listens there.
HANDED_OUT = range(2_000, 20_000 - CLIENT_PORT_OFFSET)
# Where a user's own course-mode cluster may be running.
COURSE_PORTS = {*COURSE_GRPC_PORTS, *(port + CLIENT_PORT_OFFSET for port in COURSE_GRPC_PORTS)}
# A reservation lives as long as the process it was made for, and never longer than this: no
# test or benchmark holds a port longer, and earlier runs do not use up the range.
RESERVATION_LIFETIME = 600.0


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that are free now and that no other process on this machine was
    handed recently. Ports taken with bind(0) were not enough: the kernel hands the same port to
    the next bind(0) of another process (or to an outgoing connection) as soon as the probe
    closes, before the node that was meant to have it binds it."""
    ledger = Path(tempfile.gettempdir()) / f"kayit-ports-{os.getuid()}"
    with open(ledger, "a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes
        file.seek(0)
        reserved = _live_reservations(file.read())
        candidates = [port for port in HANDED_OUT if port not in reserved]
        random.shuffle(candidates)
        ports: list[int] = []
        for port in candidates:
            if len(ports) == count:
                break
            pair = (port, port + CLIENT_PORT_OFFSET)
            if any(p in reserved or p in COURSE_PORTS for p in pair):
                continue
            if not all(port_is_free(host, p) for p in pair):
                continue
            reserved.update(dict.fromkeys(pair, (os.getpid(), time.time())))
            ports.append(port)
        file.seek(0)
        file.truncate()
        file.writelines(f"{port} {pid} {at:.0f}\n" for port, (pid, at) in reserved.items())
    if len(ports) < count:
        raise RuntimeError(f"only {len(ports)} of {count} free ports found in {HANDED_OUT}")
    return ports


def _live_reservations(ledger: str) -> dict[int, tuple[int, float]]:
    """The ledger's reservations (port: owner pid, when) whose owner still runs and whose
    lifetime has not run out."""
    live: dict[int, tuple[int, float]] = {}
    now = time.time()
    for line in ledger.splitlines():
        try:
            port, pid, at = (int(field) for field in line.split())
        except ValueError:
            continue  # a line cut short by a crash: nobody holds that port any more
        if now - at < RESERVATION_LIFETIME and _is_running(pid):
            live[port] = (pid, at)
    return live


def _is_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
