# Sourced by run.sh and test.sh: create or reuse .venv and install torchbp, its first-party
# plugins and the pinned dependencies (constraints.txt) into it. Reinstalls only when a
# pyproject.toml or the constraints change.
set -euo pipefail
TORCHBP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$TORCHBP_ROOT"
venv="${TORCHBP_VENV:-$TORCHBP_ROOT/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "torchbp needs Python >= 3.11; python3 is $(python3 --version)" >&2; exit 1; }
  python3 -m venv "$venv"
fi
want=$(cat pyproject.toml constraints.txt plugins/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$venv/.torchbp-installed" 2>/dev/null)" != "$want" ]; then
  echo "Installing torchbp and its pinned dependencies into $venv ..." >&2
  extras=()
  for plugin in plugins/*/; do extras+=(-e "$plugin"); done
  "$venv/bin/python" -m pip install -c constraints.txt -e ".[dev]" "${extras[@]}" \
    > "$venv/install.log" 2>&1 || { cat "$venv/install.log" >&2; exit 1; }
  echo "$want" > "$venv/.torchbp-installed"
fi
export PATH="$venv/bin:$PATH"
