"""Who may call a node's gRPC port: with TLS, only holders of a certificate of the cluster's
CA (``kayit.tls``); and on the data path, only nodes of the node's own cluster.

Every call a node makes to another carries its cluster id (the ``kayit-cluster`` header, once it
belongs to a cluster). A node refuses a call that names another cluster, and a call on the data
path (copies, client commands) that names none: a node of another cluster, or a stray node on
the default ports, is told so instead of changing copies here. The tools (``kayit status``,
``member remove``, ``recover``) and a node asking to join know no id and need none. Raft
messages carry the cluster in each message and are checked there (``RaftService``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from kayit.tls.identity import TlsIdentity

CLUSTER_METADATA = "kayit-cluster"

# Calls only a node of the same cluster makes.
_DATA_PATH = frozenset(
    f"/kayit.Node/{method}"
    for method in ("Store", "StoreMany", "Retrieve", "Inventory", "Delete", "Execute", "Keys")
)

ClusterId = Callable[[], str | None]  # this node's cluster, None before it is in one


def cluster_metadata(cluster: str | None) -> tuple[tuple[str, str], ...]:
    return ((CLUSTER_METADATA, cluster),) if cluster else ()


def refusal(method: str, sent: str | None, own: str | None) -> str | None:
    """Why a call of ``method`` naming cluster ``sent`` is refused by a node of ``own``; None
    if it is not."""
    if own is None:
        return None  # not in a cluster yet: nothing here to protect
    if sent is not None and sent != own:
        return f"this node belongs to cluster {own}, not to cluster {sent}"
    if sent is None and method in _DATA_PATH:
        return f"this node belongs to cluster {own}; a call to {method} must name it"
    return None


class ClusterCheck(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # untyped base class
    """Refuses calls as ``refusal`` says, with PERMISSION_DENIED and the reason (not
    FAILED_PRECONDITION, which tells a leader it was deposed)."""

    def __init__(self, cluster_id: ClusterId) -> None:
        self._cluster_id = cluster_id

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        sent = dict(details.invocation_metadata or ()).get(CLUSTER_METADATA)
        problem = refusal(details.method, sent, self._cluster_id())
        if problem is None or handler is None:
            return handler
        return _refusing(handler, problem)


def _refusing(handler: grpc.RpcMethodHandler, problem: str) -> grpc.RpcMethodHandler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **codecs)
    return grpc.unary_unary_rpc_method_handler(refuse, **codecs)


def add_port(server: grpc.aio.Server, address: str, tls: TlsIdentity | None) -> int:
    """Listen on ``address``, with mutual TLS when given an identity; returns the port."""
    if tls is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, tls.server_credentials()))
