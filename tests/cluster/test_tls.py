"""Mutual TLS between nodes, and the cluster id on the data path: who may call a node's gRPC
port, tried with every RPC the nodes serve."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.kayit_pb2_grpc import NodeStub, RaftStub
from kayit.rpc.security import CLUSTER_METADATA
from kayit.rpc.status import fetch_status
from kayit.tls.authority import init_authority, issue
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN
from tests.cluster.conftest import ClusterFactory

_VERSION = pb.Version(term=2**62, seq=1)
_FORGED = pb.StoredMessage(id="k", payload=b"FORGED", version=_VERSION, committed=True)

# Every RPC a node serves, with a request that would change or reveal something.
Call = Callable[[grpc.Channel, tuple[tuple[str, str], ...]], Any]
_CALLS: dict[str, Call] = {
    "Store": lambda ch, md: NodeStub(ch).Store(_FORGED, timeout=5, metadata=md),
    "StoreMany": lambda ch, md: NodeStub(ch).StoreMany(
        pb.StoreBatch(messages=[_FORGED]), timeout=5, metadata=md
    ),
    "Retrieve": lambda ch, md: NodeStub(ch).Retrieve(pb.MessageId(id="k"), timeout=5, metadata=md),
    "Join": lambda ch, md: NodeStub(ch).Join(
        pb.JoinRequest(address="127.0.0.1:1", node_id="intruder"), timeout=5, metadata=md
    ),
    "RemoveMember": lambda ch, md: NodeStub(ch).RemoveMember(
        pb.RemoveMemberRequest(member="127.0.0.1:1"), timeout=5, metadata=md
    ),
    "Count": lambda ch, md: NodeStub(ch).Count(pb.CountRequest(), timeout=5, metadata=md),
    "Status": lambda ch, md: NodeStub(ch).Status(pb.StatusRequest(), timeout=5, metadata=md),
    "Inventory": lambda ch, md: list(
        NodeStub(ch).Inventory(pb.InventoryRequest(), timeout=5, metadata=md)
    ),
    "Delete": lambda ch, md: NodeStub(ch).Delete(
        pb.DeleteRequest(entries=[pb.InventoryEntry(id="k", version=_VERSION)]),
        timeout=5,
        metadata=md,
    ),
    "Execute": lambda ch, md: NodeStub(ch).Execute(
        pb.ClientBatch(commands=[pb.ClientCommand(kind=pb.ClientCommand.GET, id="k")]),
        timeout=5,
        metadata=md,
    ),
    "Keys": lambda ch, md: NodeStub(ch).Keys(pb.KeysRequest(count=10), timeout=5, metadata=md),
    "RecoveryState": lambda ch, md: NodeStub(ch).RecoveryState(
        pb.RecoveryStateRequest(), timeout=5, metadata=md
    ),
    "Recover": lambda ch, md: NodeStub(ch).Recover(
        pb.RecoverRequest(survivors={"x": "127.0.0.1:1"}), timeout=5, metadata=md
    ),
    "Raft.Send": lambda ch, md: RaftStub(ch).Send(iter([pb.RaftBatch()]), timeout=5, metadata=md),
}
_DATA_PATH = {"Store", "StoreMany", "Retrieve", "Inventory", "Delete", "Execute", "Keys"}


def _code(call: Call, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    try:
        call(channel, metadata)
    except grpc.RpcError as error:
        return str(error.code().name)
    return "OK"


@pytest.mark.cluster
def test_a_tls_cluster_serves_clients_and_refuses_peers_without_a_certificate_of_its_ca(
    start_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = start_cluster(tolerance=1, members=2, tls=True)
    with cluster.client() as client:
        assert client.set("k", "good") == b"OK"
    address = cluster.members[cluster.member_ports[0]].address

    strangers = tmp_path / "other-ca"
    init_authority(strangers)
    issue(strangers, "node-1", ["127.0.0.1"])
    stranger = TlsIdentity.load(strangers, "node-1")
    ours = TlsIdentity.load(cluster.tls_dir, ADMIN)
    channels: dict[str, Callable[[], grpc.Channel]] = {
        "plain": lambda: grpc.insecure_channel(address),
        "another CA's certificate": lambda: grpc.secure_channel(
            address, stranger.channel_credentials()
        ),
        # Trusts the node, but shows no certificate of its own.
        "no client certificate": lambda: grpc.secure_channel(
            address, grpc.ssl_channel_credentials(ours.ca)
        ),
    }
    for how, open_channel in channels.items():
        for name, call in _CALLS.items():
            with open_channel() as channel:
                assert _code(call, channel) == "UNAVAILABLE", (how, name)

    # The tools' certificate is let in; the forged copy landed nowhere.
    assert fetch_status(address, tls=cluster.tls).role == "member"
    with cluster.client() as client:
        assert client.get("k") == b"good"
    assert list(cluster.copies("k").values()) == [b"good", b"good"]


@pytest.mark.cluster
def test_a_call_naming_another_cluster_or_none_on_the_data_path_is_refused(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=1)
    with cluster.client() as client:
        assert client.set("k", "good") == b"OK"
    member = cluster.member_ports[0]
    ours = ((CLUSTER_METADATA, cluster.cluster_id(member)),)
    theirs = ((CLUSTER_METADATA, "another-cluster"),)
    with grpc.insecure_channel(f"127.0.0.1:{member}") as channel:
        for name, call in _CALLS.items():
            if name == "Raft.Send":
                continue  # its messages carry the cluster; checked per message
            assert _code(call, channel, theirs) == "PERMISSION_DENIED", name
            if name in _DATA_PATH:
                assert _code(call, channel) == "PERMISSION_DENIED", name
        # The cluster's own id passes: the data path answers.
        reply = NodeStub(channel).Retrieve(pb.MessageId(id="k"), timeout=5, metadata=ours)
        assert reply.found and reply.message.payload == b"good"
        # Tools name no cluster, and may still ask.
        assert NodeStub(channel).Status(pb.StatusRequest(), timeout=5).role == "member"
    with cluster.client() as client:
        assert client.get("k") == b"good"
    assert list(cluster.copies("k").values()) == [b"good", b"good"]


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("hosts", "named"),
    [
        (["--host", "198.51.100.1"], "--host 198.51.100.1"),
        # Clients on loopback do not make gRPC on every address any safer.
        (["--grpc-host", "0.0.0.0", "--advertise", "198.51.100.1:1"], "--grpc-host 0.0.0.0"),
    ],
)
def test_a_node_without_tls_refuses_to_serve_grpc_beyond_loopback(
    tmp_path: Path, hosts: list[str], named: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kayit", "node", "--leader", *hosts,
         "--grpc-port", "1", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{named} would serve gRPC beyond loopback without TLS" in result.stderr
    assert "--tls-dir" in result.stderr and "--insecure" in result.stderr
