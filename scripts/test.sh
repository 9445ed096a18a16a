#!/usr/bin/env bash
# The README's test command: lint, type-check, build the docs, then the whole test suite (doctests included).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check .
ruff format --check .
mypy torchbp
python -m mkdocs build --strict -q
python -m pytest "$@"
