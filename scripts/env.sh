#!/usr/bin/env bash
# Create (once) the project virtual environment, then run the given command inside it.
#   scripts/env.sh toporeg demo      # the main job on bundled sample data
#   scripts/env.sh pytest            # the whole test suite
# Idempotent: a second run reuses .venv; a stamp file records what was installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TOPOREG_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.toporeg-env-stamp"
WANT="$(cat "$ROOT/scripts/env.sh" "$ROOT/TopoRegLib/pyproject.toml" | sha256sum | cut -c1-16)"

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[toporeg] setting up environment in $VENV" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
  # torch first, pinned: here it takes the local CPU wheel; elsewhere the normal build.
  "${PIP[@]}" "torch==2.13.0"
  # Real MRML without the desktop app: trame-slicer[standalone] pins slicer-core 5.11 + vtk 9.6.0.
  "${PIP[@]}" "trame-slicer[standalone]==2.0.0"
  "${PIP[@]}" -e "$ROOT/TopoRegLib[test,bench]"
  echo "$WANT" > "$STAMP"
fi
# Real brains for the benchmark cases (Colin27 + AAL): Debian's mricron-data, when apt is usable.
# Optional: the tests that need it skip with a visible reason when it is missing.
if [ ! -f /usr/share/mricron/templates/ch2.nii.gz ] && [ ! -f "$VENV/.mricron-tried" ] && [ "$(id -u)" = 0 ] \
   && command -v apt-get >/dev/null; then
  echo "[toporeg] installing Debian mricron-data (benchmark brains)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mricron-data) >/dev/null 2>&1 \
    || echo "[toporeg] mricron-data not installed; benchmark-data tests will be skipped" >&2
  touch "$VENV/.mricron-tried"
fi
export PATH="$VENV/bin:$PATH"
export VTK_DEFAULT_OPENGL_WINDOW="${VTK_DEFAULT_OPENGL_WINDOW:-vtkEGLRenderWindow}"
cd "$ROOT"
if [ "$#" -eq 0 ]; then exit 0; fi
exec "$@"
