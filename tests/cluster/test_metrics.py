"""Every node serves Prometheus metrics and the cluster's dashboard on its metrics port: the
metrics parse and move as commands run, and the page, loaded in a real headless browser,
shows every node with its role."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kayit.client import KayitClient
from kayit.server.ports import free_ports
from tests.cluster.harness import Cluster, NodeProcess, port_open, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(tmp_path_factory.mktemp("metrics"), tolerance=1, members=2, metrics=True)
    try:
        yield started.start()
    finally:
        started.close()


def fetch(port: int | None, path: str) -> bytes:
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        body: bytes = response.read()
    return body


def scrape(node: NodeProcess) -> Samples:
    """Every sample of the node's /metrics, parsed as Prometheus parses them."""
    text = fetch(node.metrics_port, "/metrics").decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.cluster
def test_counters_move_as_a_node_answers_its_clients(cluster: Cluster) -> None:
    member = next(iter(cluster.members.values()))  # forwards to the leader
    leader_before = scrape(cluster.leader)
    before = scrape(member)
    assert member.client_port is not None
    with KayitClient("127.0.0.1", member.client_port) as client:
        assert client.set("metered", "one") == b"OK"
        assert client.get("metered") == b"one"
        assert client.get("never-set") == b"NOT_FOUND"
        assert client.request(b"NOPE").startswith(b"ERROR BADREQUEST")
    after = scrape(member)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("kayit_commands_total", command="set", result="ok") == 1
    assert moved("kayit_commands_total", command="get", result="ok") == 1
    assert moved("kayit_commands_total", command="get", result="not_found") == 1
    assert moved("kayit_commands_total", command="invalid", result="badrequest") == 1
    assert moved("kayit_commands_total", command="set", result="noreplicas") == 0
    assert moved("kayit_command_seconds_count", command="get") == 2
    assert moved("kayit_command_seconds_count", command="set") == 1
    assert moved("kayit_client_received_bytes_total") == len(
        b"SET metered one\nGET metered\nGET never-set\nNOPE\n"
    )
    assert moved("kayit_client_sent_bytes_total") > len(b"OK\none\nNOT_FOUND\n")
    assert moved("kayit_client_connections_accepted_total") == 1
    # The leader stored the copy on one member (TOLERANCE=1): one batch, timed, to a member.
    leader_after = scrape(cluster.leader)
    batches = sum(
        leader_after[key] - leader_before.get(key, 0.0)
        for key in leader_after
        if key[0] == "kayit_replication_batch_copies_count"
    )
    assert batches >= 1
    members = {port for port in cluster.member_ports}
    replicated_to = {
        int(dict(labels)["member"].rsplit(":", 1)[1])
        for name, labels in leader_after
        if name == "kayit_replication_seconds_count"
    }
    assert replicated_to and replicated_to <= members
    forwarded = value(leader_after, "kayit_forwarded_received_total") - value(
        leader_before, "kayit_forwarded_received_total"
    )
    assert forwarded == 3  # the member's SET and two GETs, carried out by the leader


@pytest.mark.cluster
def test_role_and_term_gauges_tell_the_leader_from_its_followers(cluster: Cluster) -> None:
    term = cluster.status().term
    leader = scrape(cluster.leader)
    assert value(leader, "kayit_role", role="leader") == 1
    assert value(leader, "kayit_role", role="member") == 0
    assert value(leader, "kayit_raft_term") == term
    assert value(leader, "kayit_members", state="alive") == 2
    assert value(leader, "kayit_members", state="dead") == 0
    assert value(leader, "kayit_under_replicated") == 0
    for member in cluster.members.values():  # nothing on its way at rest
        assert value(leader, "kayit_replication_backlog_bytes", member=member.address) == 0
    for member in cluster.members.values():
        samples = scrape(member)
        assert value(samples, "kayit_role", role="member") == 1
        assert value(samples, "kayit_role", role="leader") == 0
        assert value(samples, "kayit_raft_term") == term
        assert ("kayit_under_replicated", frozenset()) not in samples  # the leader's to say
        assert value(samples, "kayit_log_bytes", log="raft") > 0


@pytest.mark.cluster
def test_the_dashboard_shows_every_node_with_its_role_in_a_browser(
    cluster: Cluster, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("the dashboard test needs Debian's chromium package: apt-get install chromium")
    member = next(iter(cluster.members.values()))  # asks the leader and the others
    roles = {node.address: "member" for node in cluster.members.values()}
    roles[cluster.leader.address] = "leader"
    view = json.loads(fetch(member.metrics_port, "/cluster.json"))
    assert {node["address"]: node["role"] for node in view["nodes"]} == roles
    assert view["leader"] == cluster.leader.address
    assert view["under_replicated"] == 0  # the leader's word, on a member's page too

    page = f"http://127.0.0.1:{member.metrics_port}/"
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
               "--virtual-time-budget=3000", "--window-size=1100,700"]  # fmt: skip
    dom = subprocess.run(
        [*browser, "--dump-dom", page], capture_output=True, timeout=30, check=True
    ).stdout.decode()
    for address, role in roles.items():
        assert f'data-address="{address}" data-role="{role}"' in dom, dom
    assert "leader: " + cluster.leader.address in dom
    assert "under-replicated: 0" in dom
    screenshot = tmp_path / "dashboard.png"
    subprocess.run(
        [*browser, f"--screenshot={screenshot}", page], capture_output=True, timeout=30, check=True
    )
    assert screenshot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.cluster
def test_a_metrics_port_taken_stops_the_node_with_a_clear_error(tmp_path: Path) -> None:
    grpc_port, client_port = free_ports(2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        node = subprocess.run(
            [sys.executable, "-m", "kayit", "node", "--leader", "--tolerance", "0",
             "--grpc-port", str(grpc_port), "--client-port", str(client_port),
             "--data-dir", str(tmp_path / "data"), "--metrics-port", str(taken)],
            capture_output=True, timeout=30, cwd=tmp_path,
        )  # fmt: skip
    assert node.returncode == 2
    error = node.stderr.decode()
    assert f"cannot serve metrics on 127.0.0.1:{taken} (--metrics-port)" in error, error
    assert not port_open(client_port)


@pytest.mark.cluster
def test_metrics_port_0_serves_none(tmp_path: Path) -> None:
    grpc_port, client_port = free_ports(2)
    node = NodeProcess(
        "lone",
        grpc_port,
        ["--leader", "--tolerance", "0", "--grpc-port", str(grpc_port),
         "--client-port", str(client_port), "--data-dir", str(tmp_path / "data"),
         "--metrics-port", "0"],
        tmp_path,
    )  # fmt: skip
    node.start()
    try:
        wait_for(lambda: port_open(client_port), 20, "the node's client port")
        assert "metrics on" not in node.log()
        assert not port_open(grpc_port + 2222)
    finally:
        node.stop()
