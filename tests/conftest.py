"""Shared test set-up: hypothesis profiles, markers, and the fast path's thread counts.

Profiles: ``dev`` (the default: more examples) and ``ci`` (fewer, chosen when
the environment variable CI is set); ``HYPOTHESIS_PROFILE`` overrides both.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from scratchlm import backend

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


@pytest.fixture(params=[1, 2, 3], ids=["1thread", "2threads", "3threads"])
def threads(request):
    """The fast path's thread count set to 1, 2 and 3 in turn (restored after)."""
    before = backend.num_threads()
    backend.set_num_threads(request.param)
    yield request.param
    backend.set_num_threads(before)
