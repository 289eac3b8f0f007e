"""A node's or a tool's TLS identity, read from a TLS dir (``kayit.tls.authority``), as gRPC
credentials: mutual TLS, where each end proves it holds a certificate of the cluster's CA."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from kayit.config import ConfigError
from kayit.tls.layout import CA_CERT, NODE_CERT, NODE_KEY, check_name


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    name: str
    ca: bytes  # PEM: the only CA whose certificates a peer may present
    certificate: bytes  # PEM
    key: bytes  # PEM
    directory: Path  # the identity's own: node.crt and node.key

    @classmethod
    def load(cls, directory: Path, name: str) -> TlsIdentity:
        check_name(name)
        files = (directory / CA_CERT, directory / name / NODE_CERT, directory / name / NODE_KEY)
        try:
            ca, certificate, key = (path.read_bytes() for path in files)
        except FileNotFoundError as error:
            raise ConfigError(
                f"no TLS identity {name!r} in {directory} ({error.filename} is missing); "
                f"make it with: kayit certs add {directory} {name} --hosts HOST,..."
            ) from error
        except PermissionError as error:
            raise ConfigError(f"cannot read {error.filename}: {error.strerror}") from error
        return cls(name, ca, certificate, key, directory / name)

    def server_credentials(self) -> grpc.ServerCredentials:
        """A server that refuses any client without a certificate of the cluster's CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.certificate)],
            root_certificates=self.ca,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """A client that trusts only the cluster's CA and shows its own certificate."""
        return grpc.ssl_channel_credentials(self.ca, self.key, self.certificate)

    def client_port_context(self) -> ssl.SSLContext:
        """TLS on a client port (``--client-tls``): this certificate, and no certificate asked
        of clients, which prove who they are with AUTH, as Redis clients do."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.directory / NODE_CERT, self.directory / NODE_KEY)
        return context

    def client_context(self) -> ssl.SSLContext:
        """For ``kayit client`` and ``kayit bench``: trust only the cluster's CA."""
        context = ssl.create_default_context(cadata=self.ca.decode("ascii"))
        context.load_cert_chain(self.directory / NODE_CERT, self.directory / NODE_KEY)
        return context
