"""``import scratchlm`` leaves the process as it found it; ``tune_process`` is explicit.

Each check runs in a fresh interpreter: the environment, glibc's allocator
settings and the threads before and after.
"""

import os
import subprocess
import sys

import pytest

ENV = {k: v for k, v in os.environ.items()
       if k not in ("OPENBLAS_THREAD_TIMEOUT", "SCRATCHLM_TUNE_RUNTIME")}


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**ENV, **env}, check=True).stdout.strip()


# glibc's mallinfo2 does not report the thresholds; M_MMAP_THRESHOLD is visible in
# malloc_info's XML only on some versions. What the tuning changes that a process
# can see for sure: freed large arrays come back without page faults. Count them.
FAULTS = ("import resource, numpy as np\n"
          "def step():\n"
          "    keep = [np.ones(s << 20, dtype=np.uint8) for s in (3, 12, 1, 20, 5)]\n"
          "step(); step()\n"
          "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
          "for _ in range(10): step()\n"
          "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")


def test_import_changes_no_environment_variable_and_starts_no_thread():
    code = ("import os, threading, sys; before = dict(os.environ); n = threading.active_count()\n"
            "import scratchlm\n"
            "from scratchlm import GPT, GPTConfig, BertModel, use_kernels, get_kernels\n"
            "import scratchlm.kernels.cpu, scratchlm.train, scratchlm.generate\n"
            "print(dict(os.environ) == before, threading.active_count() == n, get_kernels())")
    assert _run(code) == "True True fast"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_import_leaves_the_allocator_alone_and_tune_process_changes_it():
    plain = int(_run(FAULTS))
    after_import = int(_run("import scratchlm, scratchlm.models, scratchlm.kernels.cpu\n"
                            + FAULTS))
    tuned = int(_run("from scratchlm.kernels.cpu import tune_process; tune_process()\n"
                     + FAULTS))
    assert tuned < 1000 < min(plain, after_import)   # 10 x 41 MiB / 4 KiB pages untuned


def test_tune_process_sets_the_blas_timeout_only_before_numpy_loads():
    show = ("import os; from scratchlm.kernels.cpu import tune_process; "
            "applied = sorted(tune_process()); print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), applied)")
    expected = "['OPENBLAS_THREAD_TIMEOUT', 'mallopt']" if sys.platform.startswith("linux") \
        else "['OPENBLAS_THREAD_TIMEOUT']"
    assert _run(show) == f"4 {expected}"
    assert _run("import numpy; " + show).startswith("None [")             # too late: left
    assert _run(show, OPENBLAS_THREAD_TIMEOUT="9").startswith("9 [")       # the user's own
    assert _run(show, SCRATCHLM_TUNE_RUNTIME="0") == "None []"


def test_the_command_tunes_its_own_process_before_numpy_loads():
    code = ("import sys; sys.argv = ['scratchlm', 'train', '--help']\n"
            "import os\n"
            "from scratchlm.cli import main\n"
            "assert 'numpy' not in sys.modules\n"
            "try: main()\n"
            "except SystemExit: pass\n"
            "print('TIMEOUT', os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _run(code).splitlines()[-1] == "TIMEOUT 4"
