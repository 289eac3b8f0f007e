"""Finding a free port, the way the course template does: try 5555, then 5556, ..."""

from __future__ import annotations

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


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel just handed out, held open together so they are distinct; never the
    course's ports, where a user's own cluster may be running."""
    reserved = {*COURSE_GRPC_PORTS, *(port + CLIENT_PORT_OFFSET for port in COURSE_GRPC_PORTS)}
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            probe = socket.socket()
            probe.bind((host, 0))
            probes.append(probe)
            port = probe.getsockname()[1]
            if port not in reserved:
                ports.append(port)
    finally:
        for probe in probes:
            probe.close()
    return ports
