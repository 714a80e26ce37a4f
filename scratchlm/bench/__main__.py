"""One measurement process of the benchmark: ``python -m scratchlm.bench SPEC RESULT``.

SPEC is a JSON object (see ``run_worker``; ``{"framework": "memory", ...}``
for ``memory_point``); the measurements are written as JSON to the file
RESULT. ``_spawn`` starts these processes, so that each framework and round
has a process (and a peak memory) of its own.
"""

import json
import sys

from scratchlm.bench import memory_point, run_worker
from scratchlm.kernels.cpu import tune_process


def main(argv) -> None:
    tune_process()          # the process settings the scratchlm command runs with
    spec, result_path = json.loads(argv[0]), argv[1]
    if spec["framework"] == "memory":
        out = memory_point(spec["T"], spec["attention"], spec["config"])
    else:
        out = run_worker(spec)
    with open(result_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1:])
