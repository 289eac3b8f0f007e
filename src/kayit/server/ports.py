"""Finding a free port, the way the course template does: try 5555, then 5556, ..."""

from __future__ import annotations

import random
import socket

from kayit.config import CLIENT_PORT_OFFSET, COURSE_GRPC_PORTS


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


# Where free_ports looks: below Linux's ephemeral range (32768 up), from which the kernel also
# picks the local port of every outgoing connection, and apart from the course's ports and the
# chaos run's (20000-30000). A port the kernel handed out by bind(0) could be taken again at
# once by some connection between the probe's close and the node's bind.
_FREE_PORT_RANGE = range(10_000, 20_000)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that are free now, held open together while they are chosen;
    never the course's ports, where a user's own cluster may be running."""
    reserved = {*COURSE_GRPC_PORTS, *(port + CLIENT_PORT_OFFSET for port in COURSE_GRPC_PORTS)}
    rng = random.Random()
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            port = rng.choice(_FREE_PORT_RANGE)
            if port in reserved or port in ports:
                continue
            probe = socket.socket()
            try:
                probe.bind((host, port))
            except OSError:
                probe.close()
                continue
            probes.append(probe)
            ports.append(port)
    finally:
        for probe in probes:
            probe.close()
    return ports
