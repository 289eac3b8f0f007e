"""The leader's side of ``kayit member remove``: which member an operator means, and its
removal for good (``MetadataGroup.remove``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Set
from dataclasses import dataclass

from kayit.cluster.metadata_group import MetadataGroup, NotLeading
from kayit.consensus.driver import DriverStopped, ProposalDropped

# How long the leader may take to commit a removal and take the node out of the Raft
# configuration: a few commits, unless too few voters answer.
REMOVAL_TIMEOUT = 10.0


class RemovalRefused(Exception):
    """The member cannot be removed, or its removal did not finish; the text says why."""


@dataclass(frozen=True, slots=True)
class RemovedMember:
    node_id: str
    address: str


def resolve_member(nodes: Mapping[str, str], removed: Set[str], member: str) -> RemovedMember:
    """The member that ``member`` names, by node id or by gRPC address (as ``kayit status``
    lists them), in ``nodes`` (node id -> address). Raises RemovalRefused for a node that is
    no member, or the only one left: removing it would leave no cluster."""
    if member in nodes:
        found = RemovedMember(member, nodes[member])
    else:
        at = [RemovedMember(node_id, a) for node_id, a in nodes.items() if a == member]
        if not at:
            if member in removed:
                raise RemovalRefused(f"node {member} was removed already")
            named = f"at {member}" if ":" in member else f"with node id {member}"
            raise RemovalRefused(f"no member {named} (kayit status lists the members)")
        (found,) = at  # two members never share an address
    if len(nodes) == 1:
        raise RemovalRefused(
            f"node {found.node_id} at {found.address} is the only member left: removing it "
            "would leave no cluster"
        )
    return found


async def remove_member(
    group: MetadataGroup, member: str, timeout: float = REMOVAL_TIMEOUT
) -> RemovedMember:
    """Remove the member that ``member`` names (see ``resolve_member``) while ``group``
    leads; returns once it has left the Raft configuration, or at least its removal is
    committed. Raises NotLeading (nothing was done), RemovalRefused."""
    await group.read_barrier()  # the committed members, as this node still leads
    target = resolve_member(group.metadata.nodes, group.metadata.removed, member)
    try:
        async with asyncio.timeout(timeout):
            await group.remove(target.node_id)
    except TimeoutError:
        if target.node_id not in group.metadata.removed:
            raise RemovalRefused(
                f"node {target.node_id} was not removed within {timeout:g} s: are most "
                "voters alive?"
            ) from None
        # Committed: the leader takes it out of the Raft configuration as soon as it can.
    except NotLeading:
        if target.node_id not in group.metadata.removed:
            raise
        # Committed before this node stopped leading: the next leader finishes it.
    except ValueError as error:  # removed meanwhile, by another call
        raise RemovalRefused(str(error)) from None
    except (ProposalDropped, DriverStopped):
        raise RemovalRefused(
            f"leadership changed while node {target.node_id} was being removed: it may or may "
            "not be removed (kayit status tells)"
        ) from None
    return target
