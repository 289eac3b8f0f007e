"""Who leads the cluster and where, as this node believes now.

The one place that knows: the client gateway, the forwarded-command handler, the gRPC
service and the member's link to its leader all ask it at the moment they act, so a change
of leader takes effect everywhere at once. Set once at start today; elections will call
``lead`` and ``follow`` as terms change.
"""

from __future__ import annotations

from kayit.cluster.leader import Leader


class Leadership:
    def __init__(self, address: str) -> None:
        self.address = address  # this node's gRPC address
        self._local: Leader | None = None
        self._leader_address: str | None = None

    @property
    def local(self) -> Leader | None:
        """This node's Leader while it leads; None while it does not."""
        return self._local

    @property
    def leader_address(self) -> str | None:
        """The gRPC address of the node that leads; None while no leader is known."""
        return self._leader_address

    def lead(self, leader: Leader) -> None:
        self._local = leader
        self._leader_address = self.address

    def follow(self, leader_address: str | None) -> None:
        self._local = None
        self._leader_address = leader_address
