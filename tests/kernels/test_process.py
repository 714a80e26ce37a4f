"""The process settings applied on import (scratchlm/_runtime.py)."""

import os
import subprocess
import sys

import pytest

from scratchlm import _runtime


def _run(code, **env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("OPENBLAS_THREAD_TIMEOUT", "SCRATCHLM_TUNE_RUNTIME")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, check=True).stdout.strip()


SHOW = ("import os; from scratchlm import _runtime; "
        "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), sorted(_runtime.applied))")


def test_import_before_numpy_sets_the_blas_timeout_and_the_allocator():
    out = _run("import scratchlm; " + SHOW)
    expected = "['OPENBLAS_THREAD_TIMEOUT', 'mallopt']" if sys.platform.startswith("linux") \
        else "['OPENBLAS_THREAD_TIMEOUT']"
    assert out == f"4 {expected}"


def test_numpy_first_or_a_value_of_the_users_is_left_alone():
    assert _run("import numpy, scratchlm; " + SHOW).startswith("None [")
    assert _run("import scratchlm; " + SHOW, OPENBLAS_THREAD_TIMEOUT="9").startswith("9 [")


def test_turned_off_by_the_environment():
    assert _run("import scratchlm; " + SHOW, SCRATCHLM_TUNE_RUNTIME="0") == "None []"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_arrays_are_reused_without_page_faults():
    # Arrays of a few sizes made and freed together, as a training step's temporaries.
    code = ("import resource, numpy as np, scratchlm\n"
            "def step():\n"
            "    keep = [np.ones(s << 20, dtype=np.uint8) for s in (3, 12, 1, 20, 5)]\n"
            "step(); step()\n"
            "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(10): step()\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    tuned = int(_run(code))
    plain = int(_run(code, SCRATCHLM_TUNE_RUNTIME="0"))
    assert tuned < 1000 < plain         # up to 10 x 41 MiB / 4 KiB pages without the tuning
