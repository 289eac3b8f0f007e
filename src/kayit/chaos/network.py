"""Where the nodes of a chaos run live, and how the network between them is cut.

``Loopback``: every node on 127.0.0.1; no partitions. ``Namespaces``: every node in a network
namespace of its own, on a bridge, with an address from 198.51.100.0/24 (a documentation range);
the harness itself stays in the root namespace, so clients always reach every node, and only
links between nodes are cut. A cut is a blackhole route on both sides: packets on established
connections vanish (calls hang until their deadline), new connections fail at once. Both need
root and ``ip`` (iproute2); nothing else.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Protocol

_RANGE = ipaddress.ip_network("198.51.100.0/24")
_BLOCK = 27  # one /27 per run: 29 addresses, room for 2*7+1 nodes and the bridge
_PREFIX = "kayit-"  # namespaces are kayit-<pid>-<node>; bridges kyb<pid>; veths ky<pid>h<n>


class NetworkError(Exception):
    """The test network cannot be made here; the message says what is missing."""


class Network(Protocol):
    partitions: bool

    def host(self, node: int) -> str:
        """The address node ``node`` listens on."""

    def wrap(self, node: int, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` as node ``node``."""

    def cut(self, a: int, b: int) -> None: ...

    def heal(self, a: int, b: int) -> None: ...

    def close(self) -> None: ...


class Loopback:
    partitions = False

    def host(self, node: int) -> str:
        return "127.0.0.1"

    def wrap(self, node: int, argv: list[str]) -> list[str]:
        return argv

    def cut(self, a: int, b: int) -> None:
        raise NetworkError("partitions need --network netns")

    def heal(self, a: int, b: int) -> None:
        raise NetworkError("partitions need --network netns")

    def close(self) -> None:
        pass


class Namespaces:
    partitions = True

    def __init__(self, nodes: int) -> None:
        check_namespaces_usable()
        remove_stale()
        self._tag = str(os.getpid())
        self._bridge = f"kyb{self._tag}"
        self._namespaces: list[str] = []
        # Partitions may overlap on a link: it is cut by the first and healed by the last.
        self._cuts: Counter[frozenset[int]] = Counter()
        try:
            # A block is taken once the bridge has its first address: until then no other
            # process on this machine may look for a free one.
            with open(Path(tempfile.gettempdir()) / "kayit-netns.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                hosts = list(_free_block().hosts())
                self.bridge_address = str(hosts[0])
                self._addresses = [str(address) for address in hosts[1 : nodes + 1]]
                _ip("link", "add", self._bridge, "type", "bridge")
                _ip("addr", "add", f"{self.bridge_address}/{_BLOCK}", "dev", self._bridge)
            _ip("link", "set", self._bridge, "up")
            for node in range(nodes):
                self._add_node(node)
        except BaseException:
            self.close()
            raise

    def _add_node(self, node: int) -> None:
        namespace = f"{_PREFIX}{self._tag}-{node}"
        outside, inside = f"ky{self._tag}h{node}", f"ky{self._tag}n{node}"
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("link", "set", outside, "master", self._bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", namespace, "addr", "add", f"{self._addresses[node]}/{_BLOCK}", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")

    def host(self, node: int) -> str:
        return self._addresses[node]

    def wrap(self, node: int, argv: list[str]) -> list[str]:
        # `ip netns exec` execs the command, so its PID is the node's: signals reach it.
        return ["ip", "netns", "exec", self._namespaces[node], *argv]

    def cut(self, a: int, b: int) -> None:
        link = frozenset((a, b))
        if not self._cuts[link]:
            for here, there in ((a, b), (b, a)):
                self._route("add", here, there)
        self._cuts[link] += 1

    def heal(self, a: int, b: int) -> None:
        link = frozenset((a, b))
        self._cuts[link] -= 1
        if not self._cuts[link]:
            del self._cuts[link]
            for here, there in ((a, b), (b, a)):
                self._route("del", here, there)

    def _route(self, action: str, here: int, there: int) -> None:
        _ip("-n", self._namespaces[here], "route", action, "blackhole", self._addresses[there])

    def close(self) -> None:
        """Remove every namespace and the bridge (veths go with their namespace)."""
        for namespace in self._namespaces:
            _ip("netns", "del", namespace, check=False)
        self._namespaces.clear()
        _ip("link", "del", self._bridge, check=False)


def check_namespaces_usable() -> None:
    if shutil.which("ip") is None:
        raise NetworkError("`ip` (iproute2) is not installed: apt-get install iproute2")
    if os.geteuid() != 0:
        raise NetworkError("network namespaces need root; run as root or use --network loopback")


def remove_stale() -> None:
    """Namespaces and bridges left by a run that was killed: their owner's PID is gone."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(_PREFIX) and not _alive(name[len(_PREFIX) :].split("-")[0]):
            _ip("netns", "del", name, check=False)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith("kyb") and not _alive(name[3:]):
            _ip("link", "del", name, check=False)


def _alive(pid: str) -> bool:
    return pid.isdigit() and os.path.exists(f"/proc/{pid}")


def _free_block() -> ipaddress.IPv4Network:
    """A /27 of the documentation range that no interface here uses yet."""
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    used = set()
    for line in shown.stdout.splitlines():
        words = line.split()
        if "inet" in words:
            used.add(ipaddress.ip_interface(words[words.index("inet") + 1]).ip)
    for block in _RANGE.subnets(new_prefix=_BLOCK):
        if not any(address in block for address in used):
            return block  # type: ignore[return-value]  # subnets of an IPv4Network are IPv4
    raise NetworkError(f"every /{_BLOCK} of {_RANGE} is in use by other runs")


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
