"""The node's HTTP port: ``/metrics`` for Prometheus, ``/`` the dashboard and
``/cluster.json`` what it shows.

Served on the node's own asyncio loop with asyncio streams, not by prometheus-client's server
thread: the gauges and the dashboard read the node's state (its Raft group, its leader's
membership), which only the loop may touch. One request per connection, GET or HEAD only;
each answer is small and made at once, so a handful of scrapers cost the loop next to nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kayit.config import METRICS_PORT_OFFSET, ConfigError, NodeConfig

log = logging.getLogger(__name__)

_HEAD_LIMIT = 16 * 1024  # a request's line and headers; browsers send a few hundred bytes
_REQUEST_TIMEOUT = 10.0  # for the request to arrive: a connection that sends none is closed
_HTML = "text/html; charset=utf-8"
_JSON = "application/json"
_MAX_PORT = 65535

ClusterJson = Callable[[], Awaitable[bytes | None]]  # None: the node is not in a cluster yet


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, page: bytes, cluster_json: ClusterJson):
        self._registry = registry
        self._page = page
        self._cluster_json = cluster_json
        self._server: asyncio.Server | None = None

    async def open(self, config: NodeConfig, grpc_port: int) -> bool:
        """Listen on the node's metrics port; False when it has none. A port given
        (--metrics-port) that cannot be had raises ConfigError: the node stops. The default
        one, the gRPC port + 2222, is given up with a warning: the node runs without."""
        if config.metrics_port == 0:
            return False
        port = config.metrics_port or grpc_port + METRICS_PORT_OFFSET
        if port > _MAX_PORT:
            log.warning(
                "no metrics: port %d (gRPC port %d + %d) is out of range; give --metrics-port",
                port,
                grpc_port,
                METRICS_PORT_OFFSET,
            )
            return False
        try:
            await self.start(config.metrics_host, port, "--metrics-port")
        except ConfigError as error:
            if config.metrics_port is not None:
                raise
            log.warning("%s; this node serves no metrics", error)
            return False
        log.info("metrics on http://%s:%d/metrics, dashboard on /", config.metrics_host, port)
        return True

    async def start(self, host: str, port: int, flag: str) -> None:
        """Listen on ``host:port``; ConfigError, naming ``flag``, when it cannot be had."""
        try:
            self._server = await asyncio.start_server(
                self._serve, host, port, limit=_HEAD_LIMIT, reuse_address=True
            )
        except OSError as error:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({flag}): {error.strerror or error}; "
                "give another --metrics-port, or --metrics-port 0 to serve none"
            ) from error

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = await self._answer(head)
            method = head.split(b" ", 1)[0]
            writer.write(_response(status, content_type, body, with_body=method != b"HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # no whole request came: nothing to answer
        except ConnectionError:
            pass  # the client left
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[HTTPStatus, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _text(HTTPStatus.BAD_REQUEST, "not an HTTP request line")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD")
        if target == b"/metrics":
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if target in (b"/", b"/index.html"):
            return HTTPStatus.OK, _HTML, self._page
        if target == b"/cluster.json":
            try:
                view = await self._cluster_json()
            except Exception:
                log.exception("building /cluster.json failed")
                return _text(HTTPStatus.INTERNAL_SERVER_ERROR, "see the node's log")
            if view is None:
                return _text(HTTPStatus.SERVICE_UNAVAILABLE, "the node is starting")
            return HTTPStatus.OK, _JSON, view
        return _text(HTTPStatus.NOT_FOUND, "try /, /metrics or /cluster.json")


def _text(status: HTTPStatus, reason: str) -> tuple[HTTPStatus, str, bytes]:
    return (
        status,
        "text/plain; charset=utf-8",
        f"{status.value} {status.phrase}: {reason}\n".encode(),
    )


def _response(status: HTTPStatus, content_type: str, body: bytes, with_body: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
    )
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        head += "Allow: GET, HEAD\r\n"
    return head.encode() + b"\r\n" + (body if with_body else b"")
