#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a lent GPU machine:
#   bash bench/device_wheels.sh            # here, before: the wheels that machine lacks
#   bash bench/device_check.sh [WHEELS]    # there; figures go to $OUT (or /tmp/restora-gpu)
# RESTORA_GPU_SIZE (default 2048) and RESTORA_GPU_RUNS (default 3) size the upscale benchmark.
# Not yet run on a GPU. Expected: checks 2-3 min, bench 2-3 min, diffusion 1-2 min; the limits
# below are the most each may take, so to stay inside 10-minute calls run
# RESTORA_GPU_STEPS="checks bench" first and RESTORA_GPU_STEPS=diffusion after.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="${1:-.device-wheels}"
out="${OUT:-/tmp/restora-gpu}"
mkdir -p "$out"
# RESTORA_GPU_PYTHON: a Python that already has everything (to check this script on a CPU).
# Otherwise the machine's own python3 (its torch may live in a venv of its own, which a new
# venv would not see) with the carried wheels in a folder put on PYTHONPATH.
py="${RESTORA_GPU_PYTHON:-}"
if [ -z "$py" ]; then
  py=python3
  site=/tmp/restora-gpu-site
  "$py" -m pip install -q --disable-pip-version-check --no-deps --no-index --upgrade \
    --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
    'cudnn', torch.backends.cudnn.version())"
} 2>&1 | tee "$out/machine.txt"
# 1. every task's GPU path (bench/gpu_checks.py), 2. the upscale benchmark, 3. the diffusion
# benchmark (SD 1.5 at its real size); each stops at its time limit (seconds) with what it
# found so far already written.  RESTORA_GPU_STEPS picks, e.g. "diffusion" in a second call.
steps="${RESTORA_GPU_STEPS:-checks bench diffusion}"
status=0
if [[ " $steps " == *" checks "* ]]; then
  # shellcheck disable=SC2086  # RESTORA_GPU_CHECK_ARGS: further options, split on purpose
  timeout "${RESTORA_GPU_CHECKS_LIMIT:-240}" "$py" bench/gpu_checks.py ${RESTORA_GPU_CHECK_ARGS:-} \
    --out "$out/gpu_checks.json" 2>&1 | tee "$out/gpu_checks.txt" || status=1
fi
if [[ " $steps " == *" bench "* ]]; then
  # shellcheck disable=SC2086  # RESTORA_GPU_ARGS: further options, split on purpose
  timeout "${RESTORA_GPU_BENCH_LIMIT:-330}" "$py" bench/gpu_upscale.py \
    --size "${RESTORA_GPU_SIZE:-2048}" --runs "${RESTORA_GPU_RUNS:-3}" ${RESTORA_GPU_ARGS:-} \
    --out "$out/gpu_upscale.json" 2>&1 | tee "$out/gpu_upscale.txt" || status=1
fi
if [[ " $steps " == *" diffusion "* ]]; then
  # shellcheck disable=SC2086  # RESTORA_GPU_DIFFUSION_ARGS: further options, split on purpose
  timeout "${RESTORA_GPU_DIFFUSION_LIMIT:-150}" "$py" bench/gpu_diffusion.py \
    ${RESTORA_GPU_DIFFUSION_ARGS:-} --out "$out/gpu_diffusion.json" 2>&1 \
    | tee "$out/gpu_diffusion.txt" || status=1
fi
exit "$status"
