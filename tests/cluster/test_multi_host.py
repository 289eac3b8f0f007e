"""Three nodes on three hosts: each in a network namespace of its own, on an address of
198.51.100.0/24, with its own data dir, all on the same ports, as on three machines. They
listen for gRPC on every address (0.0.0.0) and announce the one the others reach them by
(--advertise); their clients reach them on that address only (--client-host), with a
password, and they speak mutual TLS with certificates made by `kayit certs`."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kayit.chaos.network import Namespaces, NetworkError, check_namespaces_usable
from kayit.client import KayitClient
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.status import fetch_status
from kayit.server.ports import free_ports
from kayit.storage.naming import file_name
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN
from tests.cluster.harness import DEAD_AFTER, HEARTBEAT, wait_for

KAYIT = [sys.executable, "-m", "kayit"]
GRPC_PORT, CLIENT_PORT = 5555, 6666  # every host has its own addresses: no clash
PASSWORD = "across the wire"
HOSTS = 3


class Host:
    """One machine: its address, its data dir, and the kayit node it runs."""

    def __init__(self, network: Namespaces, number: int, workdir: Path) -> None:
        self.network = network
        self.number = number
        self.address = network.host(number)
        self.grpc = f"{self.address}:{GRPC_PORT}"
        self.data_dir = workdir / f"host{number}"
        self.log_path = workdir / f"host{number}.log"
        self.process: subprocess.Popen[bytes] | None = None
        others = [network.host(n) for n in range(HOSTS) if n != number]
        self.argv = [
            *KAYIT, "node", *(["--leader", "--tolerance", "1"] if number == 0 else []),
            "--grpc-host", "0.0.0.0", "--advertise", self.grpc, "--client-host", self.address,
            "--grpc-port", str(GRPC_PORT), "--client-port", str(CLIENT_PORT),
            "--peers", ",".join(f"{host}:{GRPC_PORT}" for host in others),
            "--tls-dir", str(workdir / "tls"), "--tls-name", f"host{number}",
            "--requirepass-file", str(workdir / "password"),
            "--data-dir", str(self.data_dir), "--heartbeat", str(HEARTBEAT),
            "--dead-after", str(DEAD_AFTER), "--rpc-timeout", "2", "--report-every", "60",
        ]  # fmt: skip

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.network.wrap(self.number, self.argv), stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def client(self) -> KayitClient:
        return KayitClient(self.address, CLIENT_PORT, password=PASSWORD, timeout=15)

    def holds(self, message_id: str) -> bool:
        return (self.data_dir / f"node-{GRPC_PORT}" / "messages" / file_name(message_id)).exists()


class Hosts:
    def __init__(self, hosts: list[Host], tls: TlsIdentity) -> None:
        self.all = hosts
        self.tls = tls

    def status(self, host: Host) -> pb.StatusReply | None:
        try:
            # 3 s: a loaded CI machine can take over a second to answer a status call
            return fetch_status(host.grpc, timeout=3, tls=self.tls)
        except ConnectionError:
            return None

    def leader(self) -> Host | None:
        """The host whose node leads and sees every other running node alive and voting."""
        running = [host for host in self.all if host.process and host.process.poll() is None]
        for host in running:
            status = self.status(host)
            if status is not None and status.role == "leader":
                voting = {m.address for m in status.members if m.alive and m.voter}
                if voting == {other.grpc for other in running if other is not host}:
                    return host
        return None

    def wait_leader(self, what: str) -> Host:
        wait_for(lambda: self.leader() is not None, 20, what)
        leader = self.leader()
        assert leader is not None
        return leader


def _role(status: pb.StatusReply | None) -> str | None:
    return None if status is None else status.role


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    try:
        check_namespaces_usable()
        network = Namespaces(HOSTS)
    except NetworkError as error:
        pytest.skip(str(error))
    machines: list[Host] = []
    try:
        tls_dir = tmp_path / "tls"
        subprocess.run([*KAYIT, "certs", "init", str(tls_dir)], check=True, capture_output=True)
        for n in range(HOSTS):
            subprocess.run(
                [*KAYIT, "certs", "add", str(tls_dir), f"host{n}", "--hosts", network.host(n)],
                check=True, capture_output=True,
            )  # fmt: skip
        (tmp_path / "password").write_text(PASSWORD + "\n")
        machines = [Host(network, n, tmp_path) for n in range(HOSTS)]
        hosts = Hosts(machines, TlsIdentity.load(tls_dir, ADMIN))
        founder, *others = machines
        founder.start()  # as kayit cluster does: it leads before the others ask it to admit them
        wait_for(lambda: _role(hosts.status(founder)) == "leader", 20, "the founder to lead")
        for machine in others:
            machine.start()
        yield hosts
    finally:
        for machine in machines:
            machine.kill()
        network.close()


@pytest.mark.cluster
@pytest.mark.host_wide
def test_three_hosts_replicate_and_survive_a_member_and_a_leader_kill(hosts: Hosts) -> None:
    first = hosts.wait_leader("a leader that sees both other hosts alive")
    # Every node is known by the address it announced, never by 0.0.0.0.
    status = hosts.status(first)
    assert status is not None
    assert {m.address for m in status.members} | {status.address} == {h.grpc for h in hosts.all}

    # A client of any host is served; the leader keeps a copy and puts one on another host.
    member, other = (host for host in hosts.all if host is not first)
    with member.client() as client:
        assert client.set("a", "from host one") == b"OK"
    with other.client() as client:
        assert client.get("a") == b"from host one"
    # Acknowledged once stored; committed (moved into messages/) a moment later.
    wait_for(lambda: first.holds("a") and (member.holds("a") or other.holds("a")), 5, "2 copies")

    # A member dies: SETs go to the host left, and what was acknowledged stays readable.
    member.kill()
    with other.client() as client:
        assert client.get("a") == b"from host one"
        assert client.set("b", "one host down") == b"OK"
    wait_for(lambda: first.holds("b") and other.holds("b"), 5, "copies on the hosts alive")
    member.start()  # its own command again: it resumes as the node it was
    leader = hosts.wait_leader("the member back")

    # The leader dies: the two others elect one of them, which serves everything acknowledged.
    leader.kill()
    second = hosts.wait_leader("a new leader on another host")
    assert second is not leader
    for host in (h for h in hosts.all if h is not leader):
        with host.client() as client:
            assert client.get("a") == b"from host one"
            assert client.get("b") == b"one host down"
            assert client.set(f"c{host.number}", "after the leader") == b"OK"


@pytest.mark.cluster
@pytest.mark.host_wide
@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--grpc-host", "0.0.0.0"], "kayit: --grpc-host 0.0.0.0 listens on every address, but "
         "the other nodes cannot reach this node at 0.0.0.0: give --advertise HOST:PORT"),
        (["--advertise", "[::]:5555"], "kayit: --advertise [::]:5555: [::] is every address of "
         "this host, not one the other nodes can reach it by"),
    ],
)  # fmt: skip
def test_a_node_never_announces_every_address(tmp_path: Path, flags: list[str], error: str) -> None:
    result = subprocess.run(
        [*KAYIT, "node", "--leader", "--insecure", "--grpc-port", str(free_ports(1)[0]),
         "--data-dir", str(tmp_path / "data"), *flags],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(error), result.stderr
    assert "Traceback" not in result.stderr
