"""Settings for the whole suite."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Set on a test's item when its body failed, for fixtures that say more at teardown.
CALL_FAILED = pytest.StashKey[bool]()
HOST_WIDE_LOCK = Path(tempfile.gettempdir()) / "kayit-host-wide-tests.lock"

# The machines are shared and noisy: no Hypothesis check may fail a test for taking long.
settings.register_profile(
    "kayit", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("kayit")

# A KAYIT_* variable left in the developer's shell would configure every node the suite starts
# (kayit reads them as settings): the suite runs without them; tests that need one set it.
for _name in [name for name in os.environ if name.startswith("KAYIT_")]:
    del os.environ[_name]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """./run-tests runs the suite on two workers; tests that take something of the whole host
    (the course's fixed ports, network namespaces and their address blocks) share one group,
    so that pytest-xdist sends them to one worker. It does not on every pytest version (9.2
    dropped what its grouping relies on), so ``_host_wide_alone`` is what guarantees it."""
    for item in items:
        if item.get_closest_marker("host_wide"):
            item.add_marker(pytest.mark.xdist_group("host-wide"))


@pytest.fixture(autouse=True)
def _host_wide_alone(request: pytest.FixtureRequest) -> Iterator[None]:
    """A host_wide test runs only while no other one does, in any worker or any run of the
    suite on this machine: two of them at once would take the same ports, or make namespaces
    on the same address block and reach each other's nodes."""
    if request.node.get_closest_marker("host_wide") is None:
        yield
        return
    with HOST_WIDE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[CALL_FAILED] = True
    return report
