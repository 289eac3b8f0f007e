"""free_ports: processes side by side never get the same port, nor each other's derived ones."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kayit.config import CLIENT_PORT_OFFSET
from kayit.server.ports import COURSE_PORTS, _live_reservations, free_ports

HOLDER = (
    "import sys, time\n"
    "from kayit.server.ports import free_ports\n"
    "print(*free_ports(300), flush=True)\n"
    "time.sleep(60)\n"
)


def _with_derived(ports: list[int]) -> set[int]:
    return {*ports, *(port + CLIENT_PORT_OFFSET for port in ports)}


def test_a_live_process_keeps_its_ports_and_their_client_ports_to_itself() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        theirs = [int(port) for port in holder.stdout.readline().split()]
        ours = free_ports(300)
    finally:
        holder.kill()
        holder.wait()
    assert len(theirs) == len(set(theirs)) == 300
    assert len(set(ours)) == 300
    assert not _with_derived(theirs) & _with_derived(ours)


def test_ports_stay_below_the_kernels_ephemeral_range_and_off_the_course_ports() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = _with_derived(free_ports(50))
    assert max(ports) < low
    assert not ports & COURSE_PORTS


def test_reservations_of_ended_processes_and_expired_ones_are_free_again() -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    now = time.time()
    ledger = (
        f"3000 {gone.stdout.strip()} {now:.0f}\n"  # its process has ended
        f"3001 1 {now - 3600:.0f}\n"  # held for an hour: expired
        f"3002 1 {now:.0f}\n"  # pid 1 runs: still held
        "3003 1"  # cut short by a crash
    )
    assert set(_live_reservations(ledger)) == {3002}
