"""Shared test set-up: hypothesis profiles, markers, kernel modes and the engine's thread counts.

Profiles: ``dev`` (the default: more examples) and ``ci`` (fewer, chosen when
the environment variable CI is set); ``HYPOTHESIS_PROFILE`` overrides both.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

import scratchlm
from scratchlm.kernels.cpu import threads as cpu_threads

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
    """The CPU engine's thread count set to 1, 2 and 3 in turn (restored after)."""
    before = cpu_threads.num_threads()
    cpu_threads.set_num_threads(request.param)
    yield request.param
    cpu_threads.set_num_threads(before)


@pytest.fixture(params=["textbook", "fast"])
def kernels(request):
    """Every model op through the textbook table, then through the fast one (restored after)."""
    before = scratchlm.get_kernels()
    scratchlm.use_kernels(request.param)
    yield request.param
    scratchlm.use_kernels(before)
