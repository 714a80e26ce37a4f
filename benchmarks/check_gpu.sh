#!/usr/bin/env bash
# Every check that needs a GPU, in one go, from the repository root:
#   bash benchmarks/check_gpu.sh [OUT_DIR]
# 1. the tests marked gpu (CuPy against NumPy, op by op and whole models; the
#    Trainer resuming on the GPU; the CLI; NCCL with one rank per GPU),
# 2. the NCCL gradient all-reduce against one process (benchmarks/check_nccl_gpu.py),
# 3. the side-by-side benchmark against PyTorch on the same GPU (bench_gpu.py),
#    and the milliseconds per op of a training step (PROFILE_CONFIGS),
# 4. the README's main job, scratchlm train, on the GPU.
# Logs go to OUT_DIR (default gpu-check/). Runs with the repository on PYTHONPATH,
# so the Python that has CuPy needs no install of scratchlm.
out=${1:-gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
PY=${PYTHON:-python3}
BENCH_CONFIGS=${BENCH_CONFIGS:-tiny,small,gpt2ish,gpt2}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, numpy, scipy, cupy; print(sys.version.split()[0], 'numpy', numpy.__version__, \
'scipy', scipy.__version__, 'cupy', cupy.__version__)"
$PY -c "import cupy.cuda.nccl as n; print('nccl', n.get_version())" 2>&1 | tail -1
command -v mpirun && $PY -c "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])" 2>&1 | tail -1

echo "== tests marked gpu"
timeout "${TEST_TIMEOUT:-300}" $PY -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short \
    tests 2>&1 | tee "$out/tests.log" | tail -60

echo "== NCCL, one rank per GPU"
n=$($PY -c "import cupy; print(min(2, cupy.cuda.runtime.getDeviceCount()))")
timeout 120 mpirun -n "$n" $PY benchmarks/check_nccl_gpu.py 2>&1 | tail -12

echo "== benchmark against PyTorch on the GPU"
timeout "${BENCH_TIMEOUT:-300}" $PY benchmarks/bench_gpu.py --configs "$BENCH_CONFIGS" \
    --rounds "$BENCH_ROUNDS" --json "$out/bench_gpu.json" 2>&1 | tail -30

for config in ${PROFILE_CONFIGS:-small gpt2}; do
    timeout 120 $PY benchmarks/bench_gpu.py --profile "$config" 2>&1 | head -24
done

echo "== scratchlm train --backend cupy (the README's main job on the GPU)"
SECONDS=0
timeout "${TRAIN_TIMEOUT:-240}" $PY -m scratchlm train --backend cupy --no-progress \
    --out "${TMPDIR:-/tmp}/scratchlm-gpu-train" 2>&1 | tail -8
echo "wall ${SECONDS} s"
