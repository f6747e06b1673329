#!/usr/bin/env bash
# The device check, for a machine with an NVIDIA GPU and no network (torch, CuPy, JAX and Triton with CUDA there):
#   bash scripts/device-check.sh --download   # here, once: the pure-Python dependencies as wheels in .whl/ (git ignores it)
#   bash scripts/device-check.sh              # there (carry .whl), or here (GPU parts skipped): tests, then one table
# The tests run on the GPU backends of the fixture (torch-cuda, jax-gpu, cupy) and tests/test_triton.py compiled on
# CUDA (bfloat16 included; without autotuning, but for the test that checks it); scripts/device_bench.py prints the tables of the Triton kernels against SDPA and
# FlexAttention with the targets. Everything stays inside 9 minutes; logs and the tables also go to $OUT (or
# /tmp/device-check).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(array-api-compat==1.16.0 array-api-extra==0.11.5 array-api-strict==2.6.1)

if [ "${1:-}" = "--download" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl "${WHEELS[@]}"
    ls .whl
    exit
fi

out=${OUT:-/tmp/device-check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dnorm-site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/dnorm-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" CI=true PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python3 -c "import torch, dnorm; print('dnorm', dnorm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== the Triton kernels on the GPU (compiled; TRITON_INTERPRET unset there; one test autotunes, the rest do not)"
DNORM_TRITON_AUTOTUNE=0 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_triton.py 2>&1 | tee "$out/triton.log" | tail -n 15
triton=${PIPESTATUS[0]}

echo "== tests on the GPU backends"
DNORM_TRITON_AUTOTUNE=0 timeout 150 python3 -m pytest -q -p no:cacheprovider -x -k "torch-cuda or jax-gpu or cupy" tests \
    --deselect tests/test_real_model.py --deselect tests/test_triton.py 2>&1 | tee "$out/tests.log" | tail -n 15
tests=${PIPESTATUS[0]}

echo "== benchmarks"
timeout 240 python3 scripts/device_bench.py 2>&1 | tee "$out/table.md"
bench=${PIPESTATUS[0]}
echo "device check: triton tests exit $triton, tests exit $tests, benchmarks exit $bench"
[ "$triton" -eq 0 ] && [ "$tests" -le 5 ] && [ "$bench" -eq 0 ]  # pytest 5: nothing selected (no GPU backend here)
