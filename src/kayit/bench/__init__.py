"""``kayit bench``: a load generator like redis-benchmark, for kayit's text protocol and RESP.

``settings`` holds the run's parameters and the parsing of flag values, ``wire`` builds
requests and scans replies (no I/O), ``runner`` drives the connections, ``stats`` turns
latencies into percentiles and prints the result; ``course`` is the one-command-at-a-time client
of ``--course``.
"""

from kayit.bench.course import run_course
from kayit.bench.runner import BenchError, run_bench
from kayit.bench.settings import BenchSettings, format_key, parse_size
from kayit.bench.stats import BenchResult, percentiles

__all__ = [
    "BenchError",
    "BenchResult",
    "BenchSettings",
    "format_key",
    "parse_size",
    "percentiles",
    "run_bench",
    "run_course",
]
