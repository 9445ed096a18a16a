#!/usr/bin/env bash
# The GPU checks, in one call, on a machine with a CUDA device and a PyTorch of its own (no network
# needed): install torchbp and its first-party plugins into that Python without dependencies, run
# every CUDA test case, the CUDA benchmarks (eager, then two cases compiled), the per-example
# benchmark, then as much of the rest of the suite as its time limit allows under that PyTorch.
# Logs and the JSON reports go to $OUT (default ./cuda-check). Each stage has its own time limit, so
# a slow one cannot take the later ones' time, and a stopped pytest still prints its summary.
# Usage: bash scripts/cuda_check.sh [python]   (about 9 minutes at most; 5 on an H200)
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
  timeout -s INT -k 15 "$seconds" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc in $((SECONDS - started)) s"
  grep -E "^(FAILED|ERROR) " "$out/$name.log" | head -n 40
  tail -n 20 "$out/$name.log"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$py" -c 'import torch, platform; print(platform.python_version(), torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
  nproc
} 2>&1 | tee "$out/machine.txt"
# pytest-benchmark, where installed, only warns under xdist; the docs tests need mkdocs, which such
# a machine may lack
pytest=("$py" -m pytest -q -rfE -p no:benchmark --ignore tests/test_docs.py)
stage install 60 "$py" -m pip install --no-deps --no-build-isolation --no-index -e . -e plugins/torchbp-extras
stage tests-cuda 150 "${pytest[@]}" -k cuda -n 8 --junitxml "$out/tests-cuda.xml"
stage bench 120 "$py" scripts/bench.py --device cuda --no-compile --no-end-to-end --json "$out/bench-cuda.json"
stage bench-compile 90 "$py" scripts/bench.py --device cuda --cases "784-256-256-10 relu b64,LeNet" \
  --optimizers sgd --compile-all --no-end-to-end --json "$out/bench-cuda-compile.json"
stage per-example 40 "$py" scripts/per_example_bench.py --device cuda --rounds 20
stage tests-rest 120 "${pytest[@]}" -k "not cuda" -n 14
