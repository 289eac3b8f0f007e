"""The counters and histograms a node moves as it works, in a registry of its own.

They are moved on the node's event loop only, and so are plain numbers: recording a command
is an addition and a bisection, with no lock (prometheus-client's own values take one per
move, several times the cost) and no label lookup or string built per command: the code on
the hot path holds the labelled series itself, made once. The HTTP server, on the same loop,
reads them when scraped. Only the disk's syncs, timed on its writer thread, go to a
prometheus-client histogram, which is thread-safe, and come once per sync, not per command.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kayit.protocol.commands import (
    DeleteCommand,
    ExistsCommand,
    GetCommand,
    SetCommand,
)
from kayit.protocol.errors import ErrorCode
from kayit.server.outcome import DataCommand, Failed, NotFound, Outcome

# Seconds: from a GET served from memory to a SET that waits out a failover.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)

# The kinds of client request counted, and what became of them.
SET, GET, EXISTS, DEL = "set", "get", "exists", "del"
AUTH, OTHER, INVALID = "auth", "other", "invalid"
OK, NOT_FOUND = "ok", "not_found"

# The errors each data command is answered with (README, "The protocol"): their series are
# there from the start, at 0; another code, should one come, gets its series when it does.
_SET_ERRORS = (ErrorCode.NOREPLICAS, ErrorCode.NOLEADER, ErrorCode.TIMEOUT, ErrorCode.INTERNAL)
_GET_ERRORS = (ErrorCode.UNAVAILABLE, ErrorCode.NOLEADER, ErrorCode.TIMEOUT, ErrorCode.INTERNAL)


def result_name(code: ErrorCode) -> str:
    return code.name.lower()


class Count:
    """One series of a counter or gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Spread:
    """One series of a histogram: a count per bucket (the last one past every bound)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a bucket holds values <= its bound
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, values at most it), +Inf last, as Prometheus exposes buckets."""
        total = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets


class _Family:
    """A metric's series by label values, each made on first use and kept."""

    def __init__(
        self, kind: str, name: str, documentation: str, labels: tuple[str, ...] = ()
    ) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.series: dict[tuple[str, ...], Count | Spread] = {}

    def export(self) -> Metric:
        if self.kind == "histogram":
            histogram = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
            for values, spread in self.series.items():
                assert isinstance(spread, Spread)
                buckets = [(_bound(bound), count) for bound, count in spread.cumulative()]
                histogram.add_metric(list(values), buckets, spread.sum)
            return histogram
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = kind(self.name, self.documentation, labels=self.labels)
        for values, count in self.series.items():
            assert isinstance(count, Count)
            family.add_metric(list(values), count.value)
        return family


class CountFamily(_Family):
    def child(self, *values: str) -> Count:
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = Count()
        assert isinstance(series, Count)
        return series


class SpreadFamily(_Family):
    def __init__(
        self, name: str, documentation: str, labels: tuple[str, ...], bounds: tuple[float, ...]
    ) -> None:
        super().__init__("histogram", name, documentation, labels)
        self.bounds = bounds

    def child(self, *values: str) -> Spread:
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = Spread(self.bounds)
        assert isinstance(series, Spread)
        return series


class CommandMeter:
    """One kind of data command (SET, GET, EXISTS or DEL): how each ended, and how long it
    took."""

    def __init__(
        self,
        counts: CountFamily,
        latency: SpreadFamily,
        kind: str,
        errors: tuple[ErrorCode, ...],
    ) -> None:
        self._counts = counts
        self._kind = kind
        self.ok = counts.child(kind, OK)
        self.not_found = counts.child(kind, NOT_FOUND) if kind != SET else None
        self.failed = {code: counts.child(kind, result_name(code)) for code in errors}
        self.latency = latency.child(kind)

    def record(self, outcome: Outcome, seconds: float) -> None:
        if isinstance(outcome, Failed):
            failed = self.failed.get(outcome.code)
            if failed is None:
                failed = self.failed[outcome.code] = self._counts.child(
                    self._kind, result_name(outcome.code)
                )
            failed.inc()
        elif isinstance(outcome, NotFound) and self.not_found is not None:
            self.not_found.inc()
        else:
            self.ok.inc()
        self.latency.observe(seconds)


class ReplicationMeter:
    """The leader's batches of copies to one member: their size, how long each call took,
    and the calls that failed."""

    def __init__(self, meters: NodeMetrics, member: str) -> None:
        self._size = meters.replication_batch.child(member)
        self._latency = meters.replication_seconds.child(member)
        self._failures = meters.replication_failures.child(member)

    def record(self, copies: int, seconds: float, failed: bool) -> None:
        self._size.observe(copies)
        self._latency.observe(seconds)
        if failed:
            self._failures.inc()


class NodeMetrics(Collector):
    """Every counter and histogram of one node, in ``registry`` (not the process-wide one:
    nodes in one process, and tests, stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._families: list[_Family] = []
        self.commands = self._counter(
            "kayit_commands",
            "Client requests answered by this node, by command and result",
            ("command", "result"),
        )
        self.latency = self._histogram(
            "kayit_command_seconds",
            "Time from a data command's start on this node to its reply",
            ("command",),
            LATENCY_BUCKETS,
        )
        self.sets = CommandMeter(self.commands, self.latency, SET, _SET_ERRORS)
        self.gets = CommandMeter(self.commands, self.latency, GET, _GET_ERRORS)
        self.exists = CommandMeter(self.commands, self.latency, EXISTS, _GET_ERRORS)
        self.deletes = CommandMeter(self.commands, self.latency, DEL, _SET_ERRORS)
        self._meters: dict[type[DataCommand], CommandMeter] = {
            SetCommand: self.sets,
            GetCommand: self.gets,
            ExistsCommand: self.exists,
            DeleteCommand: self.deletes,
        }
        self.auth_ok = self.commands.child(AUTH, OK)
        self.auth_failed = self.commands.child(AUTH, result_name(ErrorCode.WRONGPASS))
        self.other = self.commands.child(OTHER, OK)  # PING, INFO and the rest of RESP's own
        self.invalid = self.commands.child(INVALID, result_name(ErrorCode.BADREQUEST))
        self.unauthenticated = self.commands.child(INVALID, result_name(ErrorCode.NOAUTH))
        self.bytes_in = self._counter(
            "kayit_client_received_bytes", "Bytes received from clients"
        ).child()
        self.bytes_out = self._counter("kayit_client_sent_bytes", "Bytes sent to clients").child()
        self.connections = self._counter(
            "kayit_client_connections_accepted",
            "Client connections served since start (refused ones not counted)",
        ).child()
        self.connections_open = self._gauge(
            "kayit_client_connections", "Client connections open now"
        ).child()
        self.forwarded_in = self._counter(
            "kayit_forwarded_received",
            "Client commands other nodes forwarded to this node to carry out as the leader",
        ).child()
        self.replication_batch = self._histogram(
            "kayit_replication_batch_copies",
            "Copies per call from the leader to a member",
            ("member",),
            _BATCH_BUCKETS,
        )
        self.replication_seconds = self._histogram(
            "kayit_replication_seconds",
            "Duration of the leader's calls storing copies on a member",
            ("member",),
            LATENCY_BUCKETS,
        )
        self.replication_failures = self._counter(
            "kayit_replication_failures",
            "The leader's calls storing copies on a member that failed or ran out of time",
            ("member",),
        )
        self._replication: dict[str, ReplicationMeter] = {}
        self.registry.register(self)
        self.fsync = Histogram(
            "kayit_fsync_seconds",
            "Duration of each sync of this node's message files to stable storage",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def replication(self, member: str) -> ReplicationMeter:
        meter = self._replication.get(member)
        if meter is None:
            meter = self._replication[member] = ReplicationMeter(self, member)
        return meter

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.export()

    def meter(self, command: DataCommand) -> CommandMeter:
        return self._meters[type(command)]

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> CountFamily:
        family = CountFamily("counter", name, documentation, labels)
        self._families.append(family)
        return family

    def _gauge(self, name: str, documentation: str) -> CountFamily:
        family = CountFamily("gauge", name, documentation)
        self._families.append(family)
        return family

    def _histogram(
        self, name: str, documentation: str, labels: tuple[str, ...], bounds: tuple[float, ...]
    ) -> SpreadFamily:
        family = SpreadFamily(name, documentation, labels, bounds)
        self._families.append(family)
        return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
