"""Settings for the whole suite."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# The machines are shared and noisy: no Hypothesis check may fail a test for taking long.
settings.register_profile(
    "kayit", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("kayit")
