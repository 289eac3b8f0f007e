"""``kayit certs``, and the ``--tls-dir`` flag of the tools that speak gRPC to nodes."""

from __future__ import annotations

import argparse
from pathlib import Path

from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN, CA_CERT

TLS_SUBDIR = "tls"  # DATA_DIR/tls: where kayit cluster keeps its CA and certificates


def add_certs_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser(
        "certs",
        help="make the certificates nodes and tools use to trust each other (mutual TLS)",
        description="Make a cluster's certificate authority and the certificates of its nodes "
        "and tools. A node started with --tls-dir DIR --tls-name NAME serves gRPC only over "
        "TLS and accepts only peers that present a certificate of DIR's CA; it presents "
        "DIR/NAME/node.crt itself. Layout: DIR/ca.crt, DIR/ca.key (keep it private; only "
        "'certs add' needs it), DIR/<name>/node.crt and node.key, and DIR/admin/ for the tools "
        "(kayit status, member, recover, chaos).",
    )
    actions = certs.add_subparsers(required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="make a new certificate authority in DIR, and the admin certificate",
        description="Make DIR/ca.crt and DIR/ca.key, a new certificate authority for one "
        "cluster, and DIR/admin/ for the tools. Refuses a DIR that holds a CA already.",
    )
    init.add_argument("directory", type=Path, metavar="DIR")
    init.set_defaults(run=_run_init)
    add = actions.add_parser(
        "add",
        help="make a certificate for a node, signed by DIR's authority",
        description="Make DIR/NAME/node.crt and node.key, signed by DIR's CA, valid for the "
        "host names and addresses the other nodes reach this one by. Refuses a NAME that "
        "exists.",
    )
    add.add_argument("directory", type=Path, metavar="DIR")
    add.add_argument("name", metavar="NAME", help="letters, digits, '.', '_' or '-'")
    add.add_argument(
        "--hosts", required=True, metavar="H1,H2",
        help="DNS names and IP addresses this node is dialled by, comma-separated "
        "(e.g. 127.0.0.1,localhost,node1.example.net)",
    )  # fmt: skip
    add.set_defaults(run=_run_add)


def _run_init(args: argparse.Namespace) -> int:
    from kayit.tls.authority import init_authority

    init_authority(args.directory)
    print(f"made a certificate authority in {args.directory} (and {args.directory / ADMIN}/)")
    return 0


def _run_add(args: argparse.Namespace) -> int:
    from kayit.tls.authority import issue

    hosts = [host.strip() for host in args.hosts.split(",") if host.strip()]
    made = issue(args.directory, args.name, hosts)
    print(f"made {made}/ for {', '.join(hosts)}")
    return 0


def add_tool_tls_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-dir", type=Path, metavar="DIR",
        help="speak mutual TLS with the admin certificate of DIR (made by kayit certs init); "
        f"default: DATA_DIR/{TLS_SUBDIR} if it holds one",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"),
        help="the data dir of a local cluster (kayit cluster keeps its certificates in "
        f"DATA_DIR/{TLS_SUBDIR}) (%(default)s)",
    )  # fmt: skip


def tool_identity(args: argparse.Namespace) -> TlsIdentity | None:
    """The admin identity the flags of ``add_tool_tls_flags`` name; None: plain gRPC."""
    if args.tls_dir is not None:
        return TlsIdentity.load(args.tls_dir, ADMIN)
    local = args.data_dir / TLS_SUBDIR
    if (local / CA_CERT).exists() and (local / ADMIN).is_dir():
        return TlsIdentity.load(local, ADMIN)
    return None
