"""The ``kayit`` command: node, cluster, client, status, member, recover."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar, cast

from kayit import __version__
from kayit.addresses import DEFAULT_HOST, Address, AddressError, format_address, parse_address
from kayit.chaos.command import add_chaos_command
from kayit.config import (
    CLIENT_PORT_OFFSET,
    DEFAULT_CLIENT_OUTPUT_LIMIT,
    DEFAULT_CLIENT_PORT,
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_GRPC_PORT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_METRICS_PORT,
    DEFAULT_PARTIAL_LINE_BUDGET,
    DEFAULT_TOLERANCE,
    MAX_TOLERANCE,
    METRICS_PORT_OFFSET,
    TOLERANCE_FILE,
    ClientLimits,
    ConfigError,
    NodeConfig,
    Role,
    check_password,
    node_name,
    read_password_file,
)
from kayit.protocol.framing import DEFAULT_MAX_LINE
from kayit.rpc.channels import MAX_RPC_BYTES
from kayit.settings import (
    COMMAND_ATTRIBUTE,
    CONFIG_ENV,
    CONFIG_FILE,
    ConfigFile,
    add_config_flags,
    add_file_flags,
    check_tables,
    commands,
    find_file,
    format_settings,
    given_on_command_line,
    resolve,
    settable,
)
from kayit.settings import apply as apply_settings
from kayit.storage.disk import FsyncPolicy, IoMode
from kayit.tls.command import add_certs_command, add_tool_tls_flags, tool_identity
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN

T = TypeVar("T")
EXIT_DEGRADED = 1  # kayit status: the cluster answers, but not every part of it is well
EXIT_UNREACHABLE = 3  # kayit status: the node asked does not answer
# What every address argument takes; the parts left out are the argument's defaults.
_FORMS = "HOST, HOST:PORT, :PORT or PORT"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        command = getattr(args, COMMAND_ATTRIBUTE, None)
        if command is not None:  # every command but `kayit config` itself
            flags = given_on_command_line(_parser, argv)
            file = _config_file(parser, args)
            leaf = commands(parser)[command]
            apply_settings(resolve(leaf, command, flags, _environ(args), file, Path.cwd()), args)
        return int(args.run(args))
    except ConfigError as error:
        print(f"kayit: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, naming where the usage is (exit code 2, as argparse's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kayit",
        description="A fault-tolerant distributed message store. Clients send SET <id> <message> "
        "and GET <id> over TCP to any node, which forwards them to the leader; the leader keeps "
        "each message on TOLERANCE + 1 nodes over gRPC. The nodes elect their leader (Raft): "
        f"when it dies, another takes over. Every address argument takes {_FORMS}: a host left "
        f"out is 127.0.0.1, a port left out {DEFAULT_CLIENT_PORT} for a client port and "
        f"{DEFAULT_GRPC_PORT} for a gRPC one. Errors are one line on stderr; usage errors exit "
        "with code 2.",
    )
    parser.add_argument("--version", action="version", version=f"kayit {__version__}")
    # The commands' parsers are _Parsers too; the commands' modules need only ArgumentParser.
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(required=True, metavar="COMMAND"),
    )
    _add_node(commands)
    _add_cluster(commands)
    _add_client(commands)
    _add_status(commands)
    _add_member(commands)
    _add_recover(commands)
    _add_bench(commands)
    add_certs_command(commands)
    add_chaos_command(commands)
    _add_config(commands)
    add_config_flags(parser, skip=_NOT_CONFIGURED)
    return parser


_NOT_CONFIGURED = frozenset({"config"})


def _configured(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The commands that read KAYIT_* and kayit.toml, by table name."""
    return {
        path: sub
        for path, sub in commands(parser).items()
        if path not in _NOT_CONFIGURED and settable(sub)
    }


def _config_file(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ConfigFile | None:
    file = find_file(args, os.environ, Path.cwd())
    if file is not None:
        check_tables(file, _configured(parser))
    return file


def _environ(args: argparse.Namespace) -> dict[str, str]:
    return {} if getattr(args, "no_config", False) else dict(os.environ)


def _add_node(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = commands.add_parser(
        "node",
        help="run one node",
        description="Run one kayit node. With no flags it behaves like the course template: it "
        f"takes the first free gRPC port from {DEFAULT_GRPC_PORT}; on {DEFAULT_GRPC_PORT} it "
        "forms a new cluster unless a node on the ports after it is in one, otherwise it joins "
        "the nodes on those ports. A node restarted on its data dir resumes its place. The nodes "
        "sharing a data dir keep DATA_DIR/cluster.json, the record of their cluster and its "
        "nodes' addresses: a node that lost its own state (its node dir deleted, or its Raft "
        "state damaged, which it then moves aside) joins that cluster again under a new id, "
        "whatever its flags say, and never forms a new one; to form a new cluster, use an "
        "empty data dir. Every "
        "node takes clients and forwards their commands to the leader: on its own client port (its "
        f"gRPC port + {CLIENT_PORT_OFFSET}: {DEFAULT_GRPC_PORT} has {DEFAULT_CLIENT_PORT}, "
        f"{DEFAULT_GRPC_PORT + 1} has {DEFAULT_CLIENT_PORT + 1}, ...) and, on the course's ports, "
        f"also on {DEFAULT_CLIENT_PORT}, which all of them share.",
    )
    role = node.add_mutually_exclusive_group()
    role.add_argument(
        "--leader", action="store_true",
        help="form a new cluster if this node belongs to none yet: it has no cluster state, its "
        "data dir holds no cluster.json, and none of --peers is in a cluster (it then leads "
        "until an election says otherwise)",
    )  # fmt: skip
    role.add_argument(
        "--join", type=_list(_grpc_address), metavar="HOST:PORT[,...]",
        help="join the cluster through the node(s) at HOST:PORT, any of its nodes; never form "
        "one",
    )  # fmt: skip
    node.add_argument(
        "--peers", type=_list(_grpc_address), metavar="HOST:PORT[,...]",
        help="the gRPC addresses of the cluster's other nodes: a node with no cluster state "
        "asks them to admit it, and keeps asking until one does; without --leader it never "
        "forms a cluster",
    )  # fmt: skip
    node.add_argument(
        "--host", default="127.0.0.1",
        help="address the client and gRPC ports listen on, unless --client-host or --grpc-host "
        "says otherwise (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--client-host", metavar="HOST",
        help="address the client ports listen on (default: --host)",
    )  # fmt: skip
    node.add_argument(
        "--grpc-host", metavar="HOST",
        help="address the gRPC port listens on (default: --host)",
    )  # fmt: skip
    node.add_argument(
        "--advertise", metavar="HOST:PORT",
        help="the gRPC address this node announces to the other nodes, which dial it there: "
        "its name or address as they reach it (a container's service name, a published "
        "port); never 0.0.0.0 or :: (default: the gRPC host and port; a gRPC host of 0.0.0.0 "
        "or :: needs it)",
    )  # fmt: skip
    node.add_argument(
        "--grpc-port", type=_port, help=f"gRPC port (first free from {DEFAULT_GRPC_PORT})"
    )
    node.add_argument(
        "--client-port", type=_port,
        help="this node's own client TCP port; a node that does not lead forwards its clients' "
        f"commands to the leader (the gRPC port + {CLIENT_PORT_OFFSET})",
    )  # fmt: skip
    node.add_argument(
        "--shared-client-port", type=_shared_port, metavar="PORT",
        help="a client port that every node on this host also listens on, with SO_REUSEPORT: "
        "the kernel spreads new connections over the nodes alive, so a client that reconnects "
        "is served while any node lives; a node that does not lead passes its new connections "
        "to the leader's process when it runs on this host; 0 for none (default: "
        f"{DEFAULT_CLIENT_PORT} for a node on the course's gRPC ports "
        f"{DEFAULT_GRPC_PORT}-{DEFAULT_GRPC_PORT + 63} given no --client-port, else none)",
    )  # fmt: skip
    node.add_argument(
        "--data-dir", type=Path, default=Path("data"),
        help="this node keeps its files in DATA_DIR/node-<grpc-port>/; DATA_DIR/cluster.json, "
        "shared by the nodes of DATA_DIR, names their cluster (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--tolerance", type=_tolerance, default=DEFAULT_TOLERANCE,
        help="copies on members per message, for a cluster this node forms (else "
        f"KAYIT_TOLERANCE, else {CONFIG_FILE}, else {TOLERANCE_FILE} in the working "
        "directory, else %(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--fsync", choices=[p.value for p in FsyncPolicy], default=FsyncPolicy.EVERYSEC.value,
        help="always: sync before a copy counts as stored; everysec: within a second; "
        "never: leave it to the kernel (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--io-mode", choices=[m.value for m in IoMode], default=IoMode.BUFFERED.value,
        help="buffered or unbuffered file I/O (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--max-line", type=_max_line, default=DEFAULT_MAX_LINE,
        help="longest client line in bytes (%(default)s)",
    )  # fmt: skip
    _add_password_flags(node, "clients must send AUTH PASSWORD before any other command")
    node.add_argument(
        "--insecure", action="store_true",
        help="serve beyond loopback without authentication: without it, a node given no "
        "password serves clients on loopback addresses only (protected mode) and refuses "
        "others with ERROR DENIED, and a node without --tls-dir refuses to start with a gRPC "
        "host (--grpc-host, else --host) other than loopback (its gRPC port would let anyone "
        "change every copy)",
    )  # fmt: skip
    node.add_argument(
        "--max-clients", type=_count, default=DEFAULT_MAX_CLIENTS, metavar="N",
        help="client connections at once; one more is answered ERROR LIMIT and closed "
        "(%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--timeout", type=_idle_seconds, default=DEFAULT_CLIENT_TIMEOUT, metavar="SECONDS",
        help="close a client connection that sent no request and had nothing under way for "
        "this long (0, the default: never, as Redis)",
    )  # fmt: skip
    node.add_argument(
        "--client-output-limit", type=_byte_count, default=DEFAULT_CLIENT_OUTPUT_LIMIT,
        metavar="BYTES",
        help="replies one client has not read yet (queued to it, or ready and waiting their "
        "turn); past it the client is disconnected (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--partial-line-budget", type=_byte_count, default=DEFAULT_PARTIAL_LINE_BUDGET,
        metavar="BYTES",
        help="bytes of unfinished requests (lines or RESP arrays whose end has not arrived) "
        "held for all clients together; past it the connection holding the most is answered "
        "ERROR LIMIT and closed; at least --max-line (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--heartbeat", type=_seconds, default=0.1,
        help="seconds between the leader's heartbeats; a node that hears none for 10 to 20 "
        "of them calls an election (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--dead-after", type=_seconds, default=3.0,
        help="seconds of silence before the leader stops placing copies on a node "
        "(%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--report-every", type=_seconds, default=10.0,
        help="seconds between reports; each logs only what changed since the one before: "
        "the node's counts, each member's (on the leader), messages waiting for repair, a "
        "disk failing to sync (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--rpc-timeout", type=_seconds, default=5.0,
        help="seconds before a call to another node fails (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--store-timeout", type=_seconds, default=NodeConfig().store_timeout,
        help="seconds a member may take to store a copy, plus 1 s per 4 MB queued to it; a "
        "member past it is passed over for that SET, not counted dead (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--repair-after", type=_seconds, default=30.0,
        help="seconds a member may stay dead before its copies are made again elsewhere "
        "(%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--repair-rate", type=_per_second, default=1000.0,
        help="messages per second that repair may copy, so clients keep their share "
        "(%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--scrub-every", type=_seconds, default=3600.0,
        help="seconds between checks of every member's copies against their checksums "
        "(%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--cache-mb", type=_megabytes, default=16,
        help="memory for recently written messages, which GETs then read without the disk "
        "(0 turns it off) (%(default)s)",
    )  # fmt: skip
    node.add_argument(
        "--tls-dir", type=Path, metavar="DIR",
        help="mutual TLS on the gRPC port and to every peer, with the CA and certificates of "
        "DIR (made by kayit certs): peers without a certificate of DIR's CA are refused; this "
        "node's certificate must name the host it announces (--advertise, else the gRPC host). "
        "Without it, gRPC is plain and served on loopback only",
    )  # fmt: skip
    node.add_argument(
        "--tls-name", metavar="NAME",
        help="this node's certificate in DIR: DIR/NAME/node.crt (default: node-<grpc-port>, "
        "as kayit cluster names them)",
    )  # fmt: skip
    node.add_argument(
        "--client-tls", action="store_true",
        help="the client ports speak TLS too, with this node's certificate (needs --tls-dir); "
        "clients check it against DIR/ca.crt (kayit client --tls-dir DIR, redis-cli --tls "
        "--cacert DIR/ca.crt)",
    )  # fmt: skip
    node.add_argument(
        "--metrics-port", type=_shared_port, metavar="PORT",
        help="HTTP port serving Prometheus metrics on /metrics and the cluster's dashboard on "
        "/; 0 serves none. A port given that is taken stops the node (default: the gRPC port "
        f"+ {METRICS_PORT_OFFSET}, {DEFAULT_GRPC_PORT} has {DEFAULT_METRICS_PORT}; "
        "if taken, the node runs without metrics and says so)",
    )  # fmt: skip
    node.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST",
        help="address the metrics port listens on; it asks no password, so whoever reaches it "
        "reads the metrics and the dashboard (%(default)s)",
    )  # fmt: skip
    _add_log_flags(node)
    node.add_argument(
        "-q", "--quiet", dest="log_level", action="store_const", const="warning",
        help="log warnings and errors only: --log-level warning",
    )  # fmt: skip
    node.set_defaults(run=_run_node)


def _add_log_flags(parser: argparse.ArgumentParser, nodes: str = "") -> None:
    from kayit.logs import FORMATS, LEVELS

    parser.add_argument(
        "--log-level", choices=LEVELS, default="info",
        help=f"the least important messages logged{nodes} (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--log-format", choices=FORMATS, default="text",
        help=f"text: a line per message, timestamp and level first; json: one JSON object per "
        f"line (time, level, logger, message){nodes} (%(default)s)",
    )  # fmt: skip


def _run_node(args: argparse.Namespace) -> int:
    from kayit.logs import configure_logging
    from kayit.server.node import run_node

    configure_logging(args.log_level, args.log_format)
    role = Role.LEADER if args.leader else Role.MEMBER if args.join or args.peers else Role.AUTO
    config = NodeConfig(
        role=role,
        host=args.host,
        client_host=args.client_host,
        grpc_host=args.grpc_host,
        advertise=args.advertise,
        grpc_port=args.grpc_port,
        client_port=args.client_port,
        shared_client_port=args.shared_client_port,
        join=",".join(args.join) if args.join else None,
        peers=tuple(args.peers or ()),
        data_dir=args.data_dir,
        tolerance=args.tolerance,
        io_mode=IoMode(args.io_mode),
        fsync=FsyncPolicy(args.fsync),
        max_line=args.max_line,
        heartbeat=args.heartbeat,
        dead_after=args.dead_after,
        report_every=args.report_every,
        rpc_timeout=args.rpc_timeout,
        store_timeout=args.store_timeout,
        repair_after=args.repair_after,
        repair_rate=args.repair_rate,
        scrub_every=args.scrub_every,
        cache_bytes=args.cache_mb * 1024 * 1024,
        tls=_node_identity(args),
        client_tls=args.client_tls,
        requirepass=_password(args),
        insecure=args.insecure,
        client_limits=ClientLimits(
            max_clients=args.max_clients,
            timeout=args.timeout,
            output_limit=args.client_output_limit,
            partial_line_budget=args.partial_line_budget,
        ),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    return asyncio.run(run_node(config))


def _node_identity(args: argparse.Namespace) -> TlsIdentity | None:
    if args.tls_dir is None:
        if args.tls_name is not None:
            raise ConfigError("--tls-name needs --tls-dir")
        return None
    if args.tls_name is None and args.grpc_port is None:
        raise ConfigError("--tls-dir needs --tls-name, or --grpc-port to name node-<grpc-port>")
    return TlsIdentity.load(args.tls_dir, args.tls_name or node_name(args.grpc_port))


def _add_password_flags(parser: argparse.ArgumentParser, effect: str) -> None:
    password = parser.add_mutually_exclusive_group()
    password.add_argument(
        "--requirepass", metavar="PASSWORD",
        help=f"{effect}; every process of this machine can read it in the process list: "
        "prefer --requirepass-file",
    )  # fmt: skip
    password.add_argument(
        "--requirepass-file", type=Path, metavar="FILE",
        help="as --requirepass, with the password on the first line of FILE",
    )  # fmt: skip


def _password(args: argparse.Namespace) -> bytes | None:
    if args.requirepass_file is not None:
        return read_password_file(args.requirepass_file)
    if args.requirepass is not None:
        return check_password(args.requirepass.encode("utf-8", "surrogateescape"), "--requirepass")
    return None


def _add_cluster(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="run a local cluster: a leader and members as separate processes",
        description="Start a leader and MEMBERS member nodes on this machine, print their "
        "reports, and stop them all on Ctrl-C or SIGTERM. Every node takes clients and "
        "forwards their commands to the leader. Each node is given the others as --peers, so "
        "that any of them restarted with its command line finds the cluster; node 0 forms the "
        "cluster (--leader) when DATA_DIR holds none yet. The nodes speak mutual TLS to each "
        "other: a CA and a certificate per node are made in DATA_DIR/tls the first time, and "
        "kayit status --data-dir DATA_DIR uses them. It starts nothing if any port its nodes "
        "need is taken (another cluster's, most likely), and stops them all, exit code 1, if "
        "its leader cannot start; its nodes die with it however it dies (kill -9 too, with "
        "setpriv of util-linux). If its standard output is closed, the nodes run on and what "
        "they say is dropped.",
    )
    cluster.add_argument("--members", type=int, default=4, help="member nodes (%(default)s)")
    cluster.add_argument(
        "--tolerance", type=_tolerance, default=DEFAULT_TOLERANCE,
        help=f"copies on members (else KAYIT_TOLERANCE, else {CONFIG_FILE}, else "
        f"{TOLERANCE_FILE} in the working directory, else %(default)s)",
    )  # fmt: skip
    cluster.add_argument(
        "--client-port", type=_port, default=DEFAULT_CLIENT_PORT,
        help="client port shared by every node (SO_REUSEPORT) and the leader's own; member i "
        "also has CLIENT_PORT+i of its own (%(default)s)",
    )  # fmt: skip
    cluster.add_argument(
        "--grpc-port", type=_port, default=DEFAULT_GRPC_PORT,
        help="the leader's gRPC port; members take the next ones (%(default)s)",
    )  # fmt: skip
    cluster.add_argument(
        "--metrics-port", type=_shared_port, metavar="PORT",
        help="node i serves Prometheus metrics (/metrics) and the dashboard (/) on "
        "http://127.0.0.1:PORT+i, and stops if that port is taken; 0 serves none (default: "
        f"each node's gRPC port + {METRICS_PORT_OFFSET}, from {DEFAULT_METRICS_PORT}, given up "
        "with a warning if taken)",
    )  # fmt: skip
    cluster.add_argument("--data-dir", type=Path, default=Path("data"), help="(%(default)s)")
    cluster.add_argument(
        "--fsync", choices=[p.value for p in FsyncPolicy], default=FsyncPolicy.EVERYSEC.value,
        help="(%(default)s)",
    )  # fmt: skip
    cluster.add_argument(
        "--report-every", type=_seconds, default=10.0,
        help="seconds between each node's reports (%(default)s)",
    )  # fmt: skip
    _add_log_flags(cluster, ", by every node")
    cluster.add_argument(
        "--no-tls", action="store_true",
        help="plain gRPC between the nodes instead of mutual TLS with certificates made in "
        "DATA_DIR/tls",
    )  # fmt: skip
    cluster.add_argument(
        "--client-tls", action="store_true",
        help="the client ports speak TLS too, with each node's certificate (kayit client "
        "--tls-dir DATA_DIR/tls; redis-cli --tls --cacert DATA_DIR/tls/ca.crt)",
    )  # fmt: skip
    _add_password_flags(
        cluster,
        "every node asks its clients for this password (AUTH); it is handed to the nodes in "
        "DATA_DIR/client-password, readable by its owner only",
    )
    cluster.add_argument(
        "--insecure", action="store_true",
        help="passed to every node: serve beyond loopback without authentication",
    )  # fmt: skip
    cluster.set_defaults(run=_run_cluster)


def _run_cluster(args: argparse.Namespace) -> int:
    from kayit.local_cluster import ClusterError, ClusterPlan, run_cluster, save_password

    if args.members < 0:
        raise ConfigError("--members must not be negative")
    if args.client_tls and args.no_tls:
        raise ConfigError("--client-tls needs the certificates that --no-tls leaves out")
    if args.metrics_port and args.metrics_port + args.members > 65535:
        raise ConfigError(
            f"--metrics-port {args.metrics_port}: node {args.members} would need "
            f"port {args.metrics_port + args.members}, out of range"
        )
    password = _password(args)  # a bad file stops here, not in every node
    password_file = args.requirepass_file
    if password is not None and password_file is None:
        password_file = save_password(args.data_dir, password)
    plan = ClusterPlan(
        members=args.members,
        tolerance=args.tolerance,
        client_port=args.client_port,
        grpc_port=args.grpc_port,
        data_dir=args.data_dir,
        fsync=args.fsync,
        report_every=args.report_every,
        log_level=args.log_level,
        log_format=args.log_format,
        tls=not args.no_tls,
        client_tls=args.client_tls,
        password_file=None if password_file is None else password_file.resolve(),
        insecure=args.insecure,
        metrics_port=args.metrics_port,
    )
    try:
        return asyncio.run(run_cluster(plan))
    except ClusterError as error:
        print(f"kayit cluster: {error}", file=sys.stderr)
        return 1


def _add_config(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser(
        "config",
        help=f"print the effective configuration: flags, KAYIT_* variables, {CONFIG_FILE}",
        description="Print the settings a command would run with, one table per command as "
        f"in {CONFIG_FILE}, and where each value comes from: flag, env (a KAYIT_* variable), "
        f"file ({CONFIG_FILE}, or {TOLERANCE_FILE} for the TOLERANCE of node and cluster) or "
        "default. Without COMMAND, every command's; after COMMAND, its flags as it would be "
        "given them (kayit config node --max-clients 100). Exit code 2 when a setting is "
        "refused, with the line the command would print.",
    )
    config.add_argument(
        "words", nargs=argparse.REMAINDER, metavar="COMMAND [FLAG ...]",
        help="a command (node, cluster, member remove, ...) and its flags",
    )  # fmt: skip
    add_file_flags(config)
    config.set_defaults(run=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    parser = _parser()
    known = _configured(parser)
    path, rest = _command_words(args.words, known)
    flags: dict[str, object] = {}
    given = args
    if rest:  # flags (or arguments) after the command: parsed as that command parses them
        given = parser.parse_args(args.words)
        flags = given_on_command_line(_parser, args.words)
        path = getattr(given, COMMAND_ATTRIBUTE, path)
        if not (given.config or given.no_config):  # `kayit config --config F node --flag`
            given.config, given.no_config = args.config, args.no_config
    targets = [name for name in known if not path or name == path or name.startswith(f"{path}.")]
    if not targets:
        raise ConfigError(f"config: no such command: {path}")
    file = _config_file(parser, given)
    environ = _environ(given)
    # Every table resolved before any is printed: a refused setting prints its line alone.
    tables = [
        format_settings(name, resolve(known[name], name, flags, environ, file, Path.cwd()))
        for name in targets
    ]
    if given.no_config:
        print(f"# no {CONFIG_FILE} and no KAYIT_* variable read (--no-config)")
    elif file is None:
        print(f"# no {CONFIG_FILE} here; --config FILE or {CONFIG_ENV} names one elsewhere")
    else:
        print(f"# {CONFIG_FILE}: {file.path}")
    for lines in tables:
        print()
        print("\n".join(lines))
    return 0


def _command_words(
    words: list[str], known: dict[str, argparse.ArgumentParser]
) -> tuple[str, list[str]]:
    """The longest run of leading words that names a command or a group of them ("member"),
    and the words after it."""
    path = ""
    for count, word in enumerate(words):
        longer = f"{path}.{word}" if path else word
        if not any(name == longer or name.startswith(f"{longer}.") for name in known):
            return path, words[count:]
        path = longer
    return path, []


def _add_client(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = commands.add_parser(
        "client",
        help="send commands to a node, one per line",
        description="Read commands (SET <id> <message>, GET <id>, EXISTS <id>, STRLEN <id>, "
        "DEL <id>) from standard input, one per line, and print each reply. In a pipe every "
        "line is sent as it is. At a terminal, lines can be edited and earlier ones recalled "
        "with the arrows, also those of earlier sessions (kept in ~/.kayit_history, AUTH lines "
        "left out); help, quit and exit are answered by the client itself. Given several "
        "addresses it connects to the first that answers and, when the connection fails, "
        "moves on to the next (the reply under way is lost: a SET may or may not be done).",
    )
    client.add_argument(
        "address", nargs="*", type=_list(_client_address),
        help=f"a node's client port: {_FORMS} (host 127.0.0.1, port {DEFAULT_CLIENT_PORT}); "
        "several may be given, comma-separated or one after another",
    )  # fmt: skip
    client.add_argument(
        "-a", "--pass", dest="password", metavar="PASSWORD",
        help="send AUTH PASSWORD on every connection before any command (for nodes started "
        "with --requirepass)",
    )  # fmt: skip
    _add_client_tls_flag(client)
    client.set_defaults(run=_run_client)


def _run_client(args: argparse.Namespace) -> int:
    from kayit.client import KayitClient

    given = [address for listed in args.address for address in listed]
    first, *rest = given or [(DEFAULT_HOST, DEFAULT_CLIENT_PORT)]
    try:
        client = KayitClient(*first, fallbacks=rest, password=args.password, tls=_client_tls(args))
    except OSError as error:
        print(
            f"kayit client: cannot connect to {_joined([first, *rest])}: {error}", file=sys.stderr
        )
        return 1
    interactive = sys.stdin.isatty()
    with client, _line_editing(interactive):
        for line in _client_lines(interactive):
            if not line.strip():
                continue
            lost = _joined([client.address])
            try:
                reply = client.request(line.encode("utf-8", "surrogateescape"))
            except OSError as error:
                print(
                    f"kayit client: connection to {lost} lost ({error}); no reply to that line, "
                    "so a SET may or may not be done",
                    file=sys.stderr,
                )
                try:
                    client.reconnect()
                except OSError as again:
                    print(f"kayit client: no node answers: {again}", file=sys.stderr)
                    return 1
                print(f"kayit client: connected to {_joined([client.address])}", file=sys.stderr)
                continue
            print(reply.decode("utf-8", "replace"), flush=True)
    return 0


def _line_editing(interactive: bool) -> contextlib.AbstractContextManager[None]:
    from kayit.client_shell import line_editing

    return line_editing() if interactive else contextlib.nullcontext()


def _client_lines(interactive: bool) -> Iterator[str]:
    """The lines for the node: read from a pipe as they come, each as it is; or typed at the
    prompt, where help, quit and exit are answered here."""
    if not interactive:
        while line := sys.stdin.readline():
            yield line.rstrip("\r\n")
        return
    from kayit.client_shell import HELP, QUIT, forget_if_secret

    while True:
        try:
            line = input("kayit> ")
        except EOFError:
            print()  # the prompt's line ends, as the shell's does
            return
        forget_if_secret(line)
        word = line.strip().lower()
        if word == "help":
            print(HELP)
        elif word in QUIT:
            return
        else:
            yield line


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="show every node of the cluster, and whether it is healthy",
        description="Ask a node (over gRPC) for the cluster, then its leader for every node, "
        "and each node for itself; print a line on the cluster and a table of its nodes: "
        "ROLE as the node says (the leader's view if it does not answer), NODE id, gRPC "
        "ADDRESS, TERM, ALIVE as the leader sees it, VOTER or learner in the metadata group, "
        "MESSAGES (the leader: in its index; the others: on their own disk), ASSIGNED (copies "
        "the leader's index places on it); '-' for what is not known. Exit code 0: healthy; "
        f"{EXIT_DEGRADED}: degraded (a node dead, no leader, messages under-replicated, too "
        f"few live nodes for TOLERANCE, a disk failing to sync; each said on a line of its "
        f"own); {EXIT_UNREACHABLE}: the node does not answer; 2: a usage error.",
    )
    status.add_argument(
        "address", nargs="?", type=_grpc_address, default=f"127.0.0.1:{DEFAULT_GRPC_PORT}",
        help=f"any node's gRPC address: {_FORMS} (host 127.0.0.1, port {DEFAULT_GRPC_PORT})",
    )  # fmt: skip
    status.add_argument(
        "--json", action="store_true",
        help="print the same as one JSON object: health, problems, leader, term, tolerance, "
        "messages, under_replicated, and nodes (role, node_id, address, alive, voter, term, "
        "messages, assigned; null for what is not known)",
    )  # fmt: skip
    status.add_argument(
        "--timeout", type=_seconds, default=5.0, metavar="SECONDS",
        help="how long each node may take to answer (%(default)s)",
    )  # fmt: skip
    add_tool_tls_flags(status)
    status.set_defaults(run=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    import json

    from kayit.rpc.status import fetch_cluster

    try:
        cluster = fetch_cluster(args.address, args.timeout, tls=tool_identity(args))
    except ConnectionError as error:
        print(f"kayit status: {error}", file=sys.stderr)
        if args.json:
            unreachable = {"health": "unreachable", "problems": [str(error)], "asked": args.address}
            print(json.dumps(unreachable))
        return EXIT_UNREACHABLE
    print(json.dumps(cluster.as_json()) if args.json else cluster.table())
    return EXIT_DEGRADED if cluster.problems else 0


def _add_member(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    member = commands.add_parser(
        "member",
        help="change the cluster's membership",
        description="Change which nodes belong to the cluster. Nodes join by themselves "
        "(kayit node --join); a node gone for good stays a member until it is removed.",
    )
    actions = member.add_subparsers(required=True, metavar="ACTION")
    remove = actions.add_parser(
        "remove",
        help="remove a node from the cluster for good",
        description="Remove the node at ADDR from the cluster for good. A node that is dead "
        "stays a member, and may keep its vote, until it is removed: once removed it gets no "
        "copies and no vote, and the copies it held are made again on live nodes. A removed "
        "node that still runs stops (exit code 2), and stops again if restarted on its data "
        "dir. There is no undoing it: the node may only come back as a new node, under a new "
        "id, started with an empty node dir (it finds the cluster through DATA_DIR/cluster.json, "
        "or give it --join). Removing the node that leads is "
        "allowed: it hands leadership over first. The last member cannot be removed. Prints "
        "'removed node <id> (<address>)'.",
    )
    remove.add_argument(
        "member", metavar="ADDR",
        help="the node's gRPC address, HOST:PORT as kayit status lists it, or its node id",
    )  # fmt: skip
    remove.add_argument(
        "--via", type=_list(_grpc_address), default=[f"127.0.0.1:{DEFAULT_GRPC_PORT}"],
        metavar="HOST:PORT[,HOST:PORT...]",
        help="gRPC addresses of nodes of the cluster, asked in turn until one answers; one "
        f"that does not lead redirects to the leader (127.0.0.1:{DEFAULT_GRPC_PORT})",
    )  # fmt: skip
    add_tool_tls_flags(remove)
    remove.set_defaults(run=_run_member_remove)


def _run_member_remove(args: argparse.Namespace) -> int:
    from kayit.rpc.members import RemovalFailed, remove_member

    try:
        removed = remove_member(args.member, args.via, tls=tool_identity(args))
    except RemovalFailed as error:
        print(f"kayit member remove: {error}", file=sys.stderr)
        return 1
    print(f"removed node {removed.node_id} ({removed.address})")
    return 0


def _add_recover(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recover = commands.add_parser(
        "recover",
        help="rebuild a cluster from its survivors when most of its voters are gone for good",
        description="Rebuild the cluster from the surviving nodes at HOST:PORT,... when a "
        "majority of its voters is gone for good, so that it has no leader and every SET and "
        "GET answers ERROR NOLEADER. Name every node that survived, running. The survivor "
        "with the most up-to-date metadata log becomes the only voter and the leader; the "
        "copies the survivors hold of SETs under way are committed; every other node is "
        "removed for good, and the copies it held are made again on live nodes. The other "
        "survivors follow, and vote again once they caught up. Refused (exit 1) if a node "
        "does not answer or knows of a leader. What only the lost nodes held is lost; a SET "
        "that was not acknowledged may appear to have happened. Never start a removed node "
        "again on its data dir: it stops (exit 2).",
    )
    recover.add_argument(
        "survivors", type=_list(_grpc_address), metavar="HOST:PORT[,HOST:PORT...]",
        help="the gRPC addresses of every surviving node",
    )  # fmt: skip
    add_tool_tls_flags(recover)
    recover.set_defaults(run=_run_recover)


def _run_recover(args: argparse.Namespace) -> int:
    from kayit.rpc.recover import RecoveryFailed, recover_cluster

    try:
        report = recover_cluster(args.survivors, tls=tool_identity(args))
    except RecoveryFailed as error:
        print(f"kayit recover: {error}", file=sys.stderr)
        return 1
    print(f"node {report.leader_id} ({report.leader_address}) leads in term {report.term}")
    print(f"adopted {report.adopted} pending copies; {report.message_count} ids in the index")
    print(f"removed for good: {', '.join(report.removed) or 'no node'}")
    return 0


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from kayit.bench.settings import PROTOCOLS, flag_type, parse_positive, parse_ratio, parse_size

    whole = flag_type(parse_positive)
    bench = commands.add_parser(
        "bench",
        add_help=False,  # -h is the host, as in redis-benchmark
        help="measure throughput and latency of kayit nodes or a Redis server",
        description="Send SET and GET requests over many connections, pipelined, and print "
        "the throughput and latency percentiles, like redis-benchmark. Speaks kayit's text "
        "protocol or RESP (to kayit or to redis-server alike). Keys are key:000001234 style, "
        "uniform over the keyspace; values are runs of 'x'. Errors (ERROR or -ERR replies, "
        "wrong replies) are counted, by kind (an error reply by its first two words), and a "
        "run with any ends with FAILED and exit code 1. A "
        "connection that fails connects again, to the next address given that answers, and "
        "the requests it had in flight count as errors; when none answers, the run ends with "
        "exit code 1 at once. --course behaves as the course's own stress client instead.",
    )  # fmt: skip
    bench.add_argument("--help", action="help", help="show this help message and exit")
    bench.add_argument(
        "-h", "--host", type=_list(str), action="extend", metavar="HOST",
        help="server host (127.0.0.1); several, comma-separated or repeated, are combined with "
        "every port",
    )  # fmt: skip
    bench.add_argument(
        "-p", "--port", type=_list(_port), action="extend", metavar="PORT",
        help=f"server port ({DEFAULT_CLIENT_PORT}); several, comma-separated or repeated, "
        "spread the connections over them",
    )  # fmt: skip
    bench.add_argument(
        "-c", "--connections", type=whole, default=50,
        help="parallel connections (%(default)s)",
    )  # fmt: skip
    bench.add_argument(
        "-n", "--requests", type=whole, default=100_000, help="total requests (%(default)s)"
    )
    bench.add_argument(
        "--duration", type=_seconds, metavar="SECONDS",
        help="run for this long instead of a number of requests (wins over -n)",
    )  # fmt: skip
    bench.add_argument(
        "-P", "--pipeline", type=whole, default=1,
        help="requests in flight per connection, written together (%(default)s)",
    )  # fmt: skip
    bench.add_argument(
        "--set-ratio", type=flag_type(parse_ratio), default=1.0, metavar="FRACTION",
        help="fraction of requests that are SETs, 0..1; the rest are GETs (%(default)s)",
    )  # fmt: skip
    bench.add_argument(
        "-d", "--size", type=flag_type(parse_size), default=(64, 64), metavar="BYTES",
        help="value size: 64, or a range like 5-2000 picked uniformly per request (64)",
    )  # fmt: skip
    bench.add_argument(
        "--keyspace", type=whole, default=100_000,
        help="distinct keys, key:000000000 up (%(default)s)",
    )  # fmt: skip
    bench.add_argument(
        "--protocol", choices=PROTOCOLS, default="text",
        help="text: kayit's line protocol; resp: RESP2 as Redis speaks it (%(default)s)",
    )  # fmt: skip
    bench.add_argument(
        "--course", action="store_true",
        help="the course's stress client: ONE connection, one command at a time (a line out, "
        "its reply line in), 80%% SET / 20%% GET, keys 0-9999 as bare integers, 5-2000-byte "
        "values and a 1000000-byte SET every 200th command; after an ERROR reply or a failed "
        "connection it connects again to the same address and goes on. Reports ops/s and "
        "p50/p99 per command type (SET, GET, big SET). Takes one address; fixes -c, -P, "
        "--set-ratio, -d, --keyspace and --protocol (text)",
    )  # fmt: skip
    bench.add_argument(
        "--json", action="store_true", help="print one JSON object and nothing else on stdout"
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    bench.add_argument("--seed", type=int, help="seed for keys, sizes and the SET/GET mix")
    bench.add_argument(
        "-a", "--pass", dest="password", metavar="PASSWORD",
        help="send AUTH PASSWORD on every connection before its requests",
    )  # fmt: skip
    _add_client_tls_flag(bench)
    bench.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from kayit.bench import BenchError, BenchSettings, run_bench, run_course
    from kayit.bench.settings import combine_addresses, course_settings

    addresses = combine_addresses(args.host, args.port)
    if args.course:
        _check_course_flags(args, addresses)
        settings = course_settings(
            addresses[0], args.requests, args.duration, args.seed, args.password, _client_tls(args)
        )
    else:
        settings = BenchSettings(
            addresses=addresses,
            connections=args.connections,
            requests=args.requests,
            duration=args.duration,
            pipeline=args.pipeline,
            set_ratio=args.set_ratio,
            size=args.size,
            keyspace=args.keyspace,
            protocol=args.protocol,
            seed=args.seed,
            password=args.password,
            tls=_client_tls(args),
        )
    progress = None if args.no_progress or not sys.stderr.isatty() else sys.stderr
    run = run_course if settings.course else run_bench
    try:
        result = asyncio.run(run(settings, progress))
    except BenchError as error:
        print(f"kayit bench: {error}", file=sys.stderr)
        return 1
    print(result.json_line() if args.json else result.summary(), flush=True)
    if not result.errors:
        return 0
    if args.json:  # stdout holds the JSON object alone
        print(f"kayit bench: {result.failure}", file=sys.stderr)
    return 1


def _check_course_flags(args: argparse.Namespace, addresses: tuple[Address, ...]) -> None:
    """--course is a whole preset: a flag it fixes, given another value, is a usage error."""
    from kayit.bench import BenchSettings

    usual = BenchSettings()  # what those flags are when not given
    fixed = {
        "-c": args.connections != usual.connections,
        "-P": args.pipeline != usual.pipeline,
        "--set-ratio": args.set_ratio != usual.set_ratio,
        "-d": args.size != usual.size,
        "--keyspace": args.keyspace != usual.keyspace,
        "--protocol": args.protocol != usual.protocol,
    }
    clashing = [flag for flag, given in fixed.items() if given]
    if clashing:
        raise ConfigError(f"bench --course fixes {', '.join(clashing)}: leave them out")
    if len(addresses) > 1:
        raise ConfigError("bench --course keeps one connection to one address: give one host/port")


def _add_client_tls_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-dir", type=Path, metavar="DIR",
        help="speak TLS to client ports started with --client-tls: trust DIR/ca.crt only, and "
        "show DIR/admin/ (made by kayit certs init; kayit cluster keeps it in DATA_DIR/tls)",
    )  # fmt: skip


def _client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_dir is None:
        return None
    return TlsIdentity.load(args.tls_dir, ADMIN).client_context()


def _client_address(text: str) -> Address:
    try:
        return parse_address(text, DEFAULT_CLIENT_PORT)
    except AddressError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _joined(addresses: list[Address]) -> str:
    return ", ".join(format_address(address) for address in addresses)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _grpc_address(text: str) -> str:
    """A node's gRPC address, as the nodes write it: HOST:PORT."""
    try:
        return format_address(parse_address(text, DEFAULT_GRPC_PORT))
    except AddressError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _list(item: Callable[[str], T]) -> Callable[[str], list[T]]:
    """A flag value of one or more comma-separated items."""

    def parse(text: str) -> list[T]:
        return [item(part.strip()) for part in text.split(",")]

    return parse


def _shared_port(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def _positive(unit: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number ({unit}): {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be more than 0 {unit}")
        return value

    return parse


_seconds = _positive("seconds")
_per_second = _positive("per second")


def _idle_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number (seconds): {text!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _whole(what: str, least: int, most: int | None = None, unit: str = "") -> Callable[[str], int]:
    """A flag value that is a whole number from ``least`` (up to ``most``), ``what`` naming it
    in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if most is not None and not least <= value <= most:
            raise argparse.ArgumentTypeError(f"must be between {least} and {most}{unit}")
        if value < least:
            bound = "must not be negative" if least == 0 else f"must be at least {least}{unit}"
            raise argparse.ArgumentTypeError(bound)
        return value

    return parse


_count = _whole("a whole number", 1)
_tolerance = _whole("a whole number", 0, MAX_TOLERANCE)
_byte_count = _whole("a number of bytes", 1024, unit=" bytes")
_megabytes = _whole("a whole number of MiB", 0)
_max_line = _whole("a number of bytes", 1024, MAX_RPC_BYTES // 2, " bytes")
