"""Nodes in one process, wired as ``kayit node`` wires them, for tests of the Leader.

Each node has its own directory and its own gRPC server on loopback, serving its metadata
group's Raft service and a real NodeService over its MessageStore; its PendingCopies promote
its copies as Placed entries apply, and its Membership hears the other nodes through their
Raft messages. A Leader built on a node reaches the others with the real GrpcMemberTransport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc

from kayit.cluster.leader import Leader
from kayit.cluster.membership import Membership
from kayit.cluster.metadata_group import Admission, GroupHooks, GroupOptions, MetadataGroup
from kayit.cluster.pending import PendingCopies
from kayit.cluster.removal import remove_member
from kayit.consensus.driver import DriverConfig
from kayit.metadata.commands import PlacedItem
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import SERVER_OPTIONS
from kayit.rpc.kayit_pb2_grpc import add_NodeServicer_to_server, add_RaftServicer_to_server
from kayit.rpc.peers import GrpcMemberTransport, Peers
from kayit.rpc.service import NodeService
from kayit.server.forwarding import execute_forwarded, keys_forwarded
from kayit.server.leadership import Leadership
from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.store import MessageStore
from kayit.version import Version
from tests.waiting import eventually, run_closing

OPTIONS = GroupOptions(
    driver=DriverConfig(tick_seconds=0.05),  # elections in 0.5 to 1 s
    fsync=FsyncPolicy.EVERYSEC,
    dead_after=1.0,
    duty_seconds=0.05,
    join_retry_seconds=0.1,
)
DEAD_AFTER = 1.0  # a node silent this long is dead to a Leader
STORE_TIMEOUT = 1.0
RPC_TIMEOUT = 2.0
SETTLE_EVERY = 1.0  # seconds between PendingCopies' looks at every pending copy


@dataclass(eq=False)
class ClusterNode:
    name: str
    root: Path
    port: int
    group: MetadataGroup
    store: MessageStore
    pending: PendingCopies
    membership: Membership  # every node it heard from, fed by its group's Raft messages
    peers: Peers
    service: NodeService
    server: grpc.aio.Server | None = None
    settling: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.group.id

    @property
    def address(self) -> str:
        return self.group.address

    def leader(self, membership: Membership | None = None) -> Leader:
        """A Leader on this node's group for its term now, as a node makes one once elected.
        ``membership``: who it takes to be alive; by default whoever this node hears."""
        term = self.group.term
        return Leader(
            group=self.group,
            store=self.store,
            membership=membership or self.membership,
            transport=GrpcMemberTransport(self.peers, term),
            term=term,
            store_timeout=STORE_TIMEOUT,
        )

    async def plug_in(self) -> None:
        """Serve again on the node's port, after ``unplug``."""
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.serve(server)

    async def serve(self, server: grpc.aio.Server) -> None:
        """Serve the node's services on ``server``, bound to its port."""
        add_NodeServicer_to_server(self.service, server)
        add_RaftServicer_to_server(self.group.raft_service, server)
        await server.start()
        self.server = server

    async def unplug(self) -> None:
        """Nothing reaches the node any more; it still runs, and still sends."""
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    def start_settling(self) -> None:
        self.settling = asyncio.get_running_loop().create_task(self.pending.run(SETTLE_EVERY))

    async def stop(self) -> None:
        await self.unplug()
        if self.settling is not None:
            self.settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.settling
        await self.group.stop()
        await self.peers.close()
        await self.store.close()

    async def committed(self) -> dict[str, Version]:
        """The copies this node's store holds as committed, by id."""
        return dict(await self.store.inventory(verify=True))

    async def pending_copies(self) -> list[tuple[str, Version]]:
        """The copies this node's store holds pending, each id with its version."""
        return await self.store.pending_inventory(verify=True)


class LeaderCluster:
    """Nodes named n1, n2, ...; each in ``root/<name>`` (its messages and its ``raft``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, ClusterNode] = {}

    async def open(self, name: str) -> ClusterNode:
        root = self.root / name
        server = grpc.aio.server(options=SERVER_OPTIONS)
        port = server.add_insecure_port("127.0.0.1:0")
        store = MessageStore(DiskManager(root, IoMode.BUFFERED, FsyncPolicy.NEVER))
        await store.open()
        membership = Membership(DEAD_AFTER)
        placed: list[Callable[[list[PlacedItem]], None]] = []  # once the node's id is known
        hooks = GroupHooks(
            on_heard=partial(_heard, membership), on_placed=lambda items: placed[0](items)
        )
        group = await MetadataGroup.open(root / "raft", f"127.0.0.1:{port}", OPTIONS, hooks=hooks)
        pending = PendingCopies(group.id, store, lambda: group.metadata)
        placed.append(pending.placed)
        service = NodeService(
            store=store,
            term=lambda: group.term,
            admit=group.admit,
            remove_member=partial(remove_member, group),
            status=lambda: pb.StatusReply(address=group.address, node_id=group.id),
            # No Leader serves clients here: forwarded commands are refused as on a follower.
            execute=partial(execute_forwarded, Leadership(group.address)),
            keys=partial(keys_forwarded, Leadership(group.address)),
        )
        node = ClusterNode(
            name, root, port, group, store, pending, membership, Peers(RPC_TIMEOUT), service
        )
        await node.serve(server)
        self.nodes[name] = node
        return node

    async def bootstrap(self, name: str, tolerance: int) -> ClusterNode:
        node = await self.open(name)
        await node.group.bootstrap(tolerance)
        node.start_settling()
        return node

    async def join(self, name: str, through: str) -> ClusterNode:
        node = await self.open(name)
        await node.group.join([self.nodes[through].address], self._ask)
        node.start_settling()
        return node

    async def _ask(self, address: str, node_id: str, own_address: str) -> Admission:
        """The join RPC, minus the wire."""
        for node in self.nodes.values():
            if node.address == address:
                return await node.group.admit(node_id, own_address)
        raise ConnectionRefusedError(address)

    async def stop(self, name: str) -> None:
        await self.nodes.pop(name).stop()

    async def close(self) -> None:
        for name in list(self.nodes):
            await self.stop(name)

    def by_id(self, node_id: str) -> ClusterNode:
        return next(node for node in self.nodes.values() if node.id == node_id)

    async def leading_node(
        self, among: Iterable[str] | None = None, timeout: float = 6.0
    ) -> ClusterNode:
        """The node that leads, once every node of ``among`` (all by default) knows it."""
        names = list(among or self.nodes)

        def agreed() -> bool:
            known = {self.nodes[name].group.leader_id for name in names}
            leader_id = known.pop() if len(known) == 1 else None
            return any(
                self.nodes[n].id == leader_id and self.nodes[n].group.is_leader for n in names
            )

        await eventually(agreed, timeout, "a leader every node knows")
        return next(self.nodes[n] for n in names if self.nodes[n].group.is_leader)

    async def leading(self) -> tuple[ClusterNode, Leader]:
        """Three nodes at TOLERANCE=1 (``three_nodes``) and a ready Leader on the one that
        leads."""
        node = await self.three_nodes(tolerance=1)
        leader = node.leader()
        await leader.ready()
        return node, leader

    async def three_nodes(self, tolerance: int = 1) -> ClusterNode:
        """n1 forms the cluster, n2 and n3 join; returns the leader once all three vote and
        agree on the metadata."""
        await self.bootstrap("n1", tolerance)
        await self.join("n2", through="n1")
        await self.join("n3", through="n1")
        ids = {node.id for node in self.nodes.values()}

        def settled() -> bool:
            groups = [node.group for node in self.nodes.values()]
            return all(
                g.raft_config.voters == ids and g.metadata == groups[0].metadata for g in groups
            )

        await eventually(settled, 5.0, "three voters with the same metadata")
        return await self.leading_node()


def _heard(membership: Membership, node_id: str) -> None:
    """The group's ``on_heard``: a Raft message from ``node_id`` arrived."""
    membership.heard_from(node_id)


def run(root: Path, scenario: Callable[[LeaderCluster], Awaitable[None]]) -> None:
    """Run ``scenario``; whatever happens, every node is stopped and no task is left."""
    run_closing(partial(LeaderCluster, root), scenario)
