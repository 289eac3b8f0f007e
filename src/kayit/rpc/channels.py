"""gRPC channels and the options shared by every node and tool."""

from __future__ import annotations

import grpc

from kayit.tls.identity import TlsIdentity

# Large enough for a batch (~4 MiB) plus one message at the client line limit.
MAX_RPC_BYTES = 256 * 1024 * 1024

_COMMON = [
    ("grpc.max_send_message_length", MAX_RPC_BYTES),
    ("grpc.max_receive_message_length", MAX_RPC_BYTES),
]

SERVER_OPTIONS = [
    *_COMMON,
    # Without this, two nodes could both bind the same port and share its traffic.
    ("grpc.so_reuseport", 0),
]

CHANNEL_OPTIONS = [
    *_COMMON,
    # A restarted peer is found again within about a second, not after minutes of backoff.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def open_channel(address: str, tls: TlsIdentity | None) -> grpc.aio.Channel:
    """A node's channel to another node: mutual TLS when it has an identity."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=CHANNEL_OPTIONS)


def open_tool_channel(address: str, tls: TlsIdentity | None) -> grpc.Channel:
    """A blocking channel for the command-line tools (``kayit status`` and the like)."""
    if tls is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, tls.channel_credentials(), options=CHANNEL_OPTIONS)
