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
  "${PIP[@]}" -e "$ROOT/TopoRegLib[test,bench,cohort]"
  echo "$WANT" > "$STAMP"
fi
# Debian packages, when apt is usable: mricron-data (Colin27 + AAL, the benchmark brains) and chromium +
# chromium-driver (the browser panel's end-to-end tests). Optional: the tests that need them skip with a
# visible reason when they are missing.
DEBS=()
[ -f /usr/share/mricron/templates/ch2.nii.gz ] || DEBS+=(mricron-data)
command -v chromium >/dev/null && command -v chromedriver >/dev/null || DEBS+=(chromium chromium-driver)
if [ "${#DEBS[@]}" -gt 0 ] && [ ! -f "$VENV/.debs-tried" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[toporeg] installing Debian packages: ${DEBS[*]}" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${DEBS[@]}") >/dev/null 2>&1 \
    || echo "[toporeg] could not install ${DEBS[*]}; the tests that need them will be skipped" >&2
  touch "$VENV/.debs-tried"
fi
export PATH="$VENV/bin:$PATH"
export VTK_DEFAULT_OPENGL_WINDOW="${VTK_DEFAULT_OPENGL_WINDOW:-vtkEGLRenderWindow}"
cd "$ROOT"
if [ "$#" -eq 0 ]; then exit 0; fi
exec "$@"
