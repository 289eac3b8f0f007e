"""The chaos network's cuts, on real namespaces: partitions that overlap on a link."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kayit.chaos.network import Namespaces, check_namespaces_usable


def _blackholes(node: int) -> str:
    namespace = f"kayit-{os.getpid()}-{node}"
    shown = subprocess.run(
        ["ip", "-n", namespace, "route", "show", "type", "blackhole"],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout


@pytest.mark.cluster
@pytest.mark.host_wide
def test_a_link_cut_by_two_partitions_stays_cut_until_both_heal() -> None:
    check_namespaces_usable()
    network = Namespaces(3)
    try:
        second = network.host(1)
        network.cut(0, 1)  # one partition
        network.cut(1, 0)  # another, overlapping on the same link
        network.cut(0, 2)
        assert second in _blackholes(0) and network.host(0) in _blackholes(1)

        network.heal(0, 1)
        assert second in _blackholes(0), "healed while the other partition still holds"
        network.heal(1, 0)
        network.heal(0, 2)
        assert _blackholes(0) == _blackholes(1) == _blackholes(2) == ""
    finally:
        network.close()


NETWORK_HOLDER = (
    "import sys\n"
    "from kayit.chaos.network import Namespaces\n"
    "network = Namespaces(2)\n"
    "print(network.host(0), flush=True)\n"
    "sys.stdin.readline()\n"
    "network.close()\n"
)


@pytest.mark.cluster
@pytest.mark.host_wide
def test_runs_that_make_their_networks_at_once_take_different_address_blocks() -> None:
    check_namespaces_usable()
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", NETWORK_HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        hosts = [run.stdout.readline().strip() if run.stdout else "" for run in runs]
    finally:
        for run in runs:
            run.communicate("\n", timeout=30)
    assert all(hosts) and len(set(hosts)) == 4, hosts
