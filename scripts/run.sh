#!/usr/bin/env bash
# The README's main command: the worked example, then a small training run on XOR.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python scripts/worked_example.py
echo
python scripts/train_xor.py "$@"
