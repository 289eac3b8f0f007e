"""Settings for the whole suite."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

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
    so they run one after another on one worker."""
    for item in items:
        if item.get_closest_marker("host_wide"):
            item.add_marker(pytest.mark.xdist_group("host-wide"))
