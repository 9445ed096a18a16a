#!/usr/bin/env bash
# The README's main command: the worked 3-2-1 example, then `torchbp train` on the default
# dataset (digits), which ends by printing the command that opens its run in TensorBoard.
# Extra arguments go to `torchbp train`, e.g. bash scripts/run.sh --dataset moons --layers 2,16,2
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python scripts/worked_example.py
echo
torchbp train "$@"
