"""Shared test set-up: hypothesis profiles and markers.

Profiles: ``dev`` (the default: more examples) and ``ci`` (fewer, chosen when
the environment variable CI is set); ``HYPOTHESIS_PROFILE`` overrides both.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` where CuPy or a GPU is missing."""
    try:
        import cupy
        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs CuPy and a visible GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
