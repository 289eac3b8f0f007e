"""Between Protobuf messages and kayit's own types."""

from __future__ import annotations

from kayit.cluster.transport import Copy
from kayit.rpc import kayit_pb2 as pb
from kayit.version import Version


def version_to_pb(version: Version) -> pb.Version:
    return pb.Version(term=version.term, seq=version.seq)


def version_from_pb(version: pb.Version) -> Version:
    return Version(version.term, version.seq)


def copy_to_pb(copy: Copy) -> pb.StoredMessage:
    return pb.StoredMessage(
        id=copy.message_id,
        payload=copy.message,
        version=version_to_pb(copy.version),
        committed=copy.committed,
    )
