#!/usr/bin/env bash
# The README's test command: lint, then the whole test suite (doctests included).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check .
ruff format --check .
python -m pytest "$@"
