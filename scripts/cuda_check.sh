#!/usr/bin/env bash
# The GPU checks, in one call, on a machine with a CUDA device and a PyTorch of its own (no network
# needed): install torchbp and its first-party plugins into that Python without dependencies, run
# every CUDA test case, the CUDA benchmarks, then the rest of the suite under that PyTorch.
# Logs and the JSON report go to $OUT (default ./cuda-check). Each stage has its own time limit,
# so a slow one cannot take the later ones' time: bash scripts/cuda_check.sh [python]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=${1:-python3}
out=${OUT:-$PWD/cuda-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
stage() {  # stage NAME SECONDS COMMAND...: run COMMAND under a time limit, its output to $out/NAME.log
  local name=$1 seconds=$2
  shift 2
  echo "== $name (limit ${seconds} s)"
  local started=$SECONDS
  timeout "$seconds" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc in $((SECONDS - started)) s"
  tail -n 25 "$out/$name.log"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
  "$py" -c 'import torch, platform; print(platform.python_version(), torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
  nproc
} 2>&1 | tee "$out/machine.txt"
stage install 60 "$py" -m pip install --no-deps --no-build-isolation --no-index -e . -e plugins/torchbp-extras
stage tests-cuda 180 "$py" -m pytest -q -k cuda -n 8 -rfE --timeout 150 --junitxml "$out/tests-cuda.xml"
stage bench 140 "$py" scripts/bench.py --device cuda --no-compile --no-end-to-end --json "$out/bench-cuda.json"
stage per-example 40 "$py" scripts/per_example_bench.py --device cuda --rounds 20
stage tests-rest 120 "$py" -m pytest -q -k "not cuda" -n 12 -rfE --timeout 120
