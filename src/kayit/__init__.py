"""kayit: a fault-tolerant distributed message store."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kayit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
