#!/usr/bin/env bash
# Create or refresh .venv from requirements.lock (the pinned, tested environment) and
# install bp-monitor itself in editable mode. A no-op when the lock and pyproject.toml
# have not changed since the last successful install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${BP_VENV:-$ROOT/.venv}"
STAMP="$VENV/.bp-installed"
case "$VENV" in  # Python's venv refuses it: ':' separates PATH entries
  *:*) echo "[install] error: Python cannot create a virtual environment in a folder whose path holds ':' ($VENV); clone elsewhere" >&2; exit 1 ;;
esac
PYTHON="${PYTHON:-}"

want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "[install] .venv is up to date"
  exit 0
fi

if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "[install] error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
echo "[install] installing the pinned environment (requirements.lock)"
"$VENV/bin/python" -m pip install -q "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
"$VENV/bin/python" -m pip install -q -r requirements.lock
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
echo "$want" >"$STAMP"
echo "[install] done: $("$VENV/bin/bp" --version)"
