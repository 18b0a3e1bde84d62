#!/usr/bin/env bash
# The Colab lane: Colab's own stack (.ci/colab-pins.txt, copied from Colab's published pip freeze) in a
# virtual environment of Python 3.13; the course installed there exactly as the notebooks' setup cell
# installs it on Colab; then every notebook executed in fast mode, and the attention explorer displayed
# on Colab's ipywidgets 7.7.1. Called by .ci/run. Times of each step are printed.
#
# The environment is kept in $COURSEKIT_COLAB_VENV (default ~/.cache/coursekit/colab-py313) and reused
# while the pins file and the Python are unchanged. Without a Python 3.13 the lane fails in CI (CI=true)
# and is skipped elsewhere, saying so either way.
set -euo pipefail
cd "$(dirname "$0")/.."
PINS=.ci/colab-pins.txt
# What the lane installs of Colab's stack (their versions, and those of all they need, are Colab's):
# what the course imports, the notebook kernel, Colab's widgets, and Colab's pip.
STACK=(pip torch torchvision numpy matplotlib tqdm einops safetensors pillow packaging
       ipython ipykernel jupyter_client ipywidgets nbclient nbformat pytest)
VENV="${COURSEKIT_COLAB_VENV:-$HOME/.cache/coursekit/colab-py313}"
export PYDEVD_DISABLE_FILE_VALIDATION=1  # Colab's debugpy on Python 3.13 warns about frozen modules
step() { echo "[colab lane] $*"; }
clock() { date +%s; }

PY313=""  # the first Python 3.13 that runs (a pyenv shim on PATH may not)
for candidate in "$(command -v python3.13 || true)" \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV); do
  if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
    PY313="$candidate"; break
  fi
done
if [ -z "$PY313" ]; then
  step "NO PYTHON 3.13: Colab runs Python 3.13 and this lane needs one (looked for python3.13 on PATH"
  step "and in ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.13*). Install one, e.g. 'pyenv install 3.13'."
  if [ "${CI:-}" = "true" ]; then step "FAILED (CI=true)"; exit 1; fi
  step "skipped (not in CI)"; exit 0
fi

# 1. Colab's stack, built once per pins file and Python.
stamp="$(sha256sum "$PINS" | cut -d' ' -f1) $("$PY313" -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.colab-stamp" 2>/dev/null)" != "$stamp" ]; then
  step "building Colab's stack in $VENV with $PY313 (torch from PyPI: several GB)"
  t0=$(clock)
  rm -rf "$VENV"
  "$PY313" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -c "$PINS" "${STACK[@]}"
  echo "$stamp" > "$VENV/.colab-stamp"
  step "built in $(( $(clock) - t0 )) s (download and install)"
else
  step "reusing Colab's stack in $VENV"
fi
PY="$VENV/bin/python"
# A reused environment gets the course afresh, as a new Colab runtime would.
"$PY" -m pip uninstall -q -y coursekit vit-pytorch 2>/dev/null || true

# 2. The test tools (not on Colab), under Colab's pins: proved by the check that follows.
t0=$(clock)
"$PY" -m pip install -q -c "$PINS" "nbval>=0.11"
"$PY" scripts/colab_stack.py installed "${STACK[@]}"

# 3. The course, installed exactly as the setup cell installs it (its arguments, with this clone for
#    /content/course): first a dry run that must add only vit-pytorch and coursekit, then the install.
mapfile -t args < <("$PY" scripts/sync_links.py --colab-install "$PWD")
report="$(mktemp)"
"$PY" -m pip install --dry-run --report "$report" "${args[@]}"
"$PY" scripts/colab_stack.py report "$report"
rm -f "$report"
"$PY" -m pip install "${args[@]}"
"$PY" scripts/colab_stack.py installed "${STACK[@]}"
step "test tools and the setup cell's install: $(( $(clock) - t0 )) s"

# 4. Every notebook in fast mode (pyproject's nbval options; the kernel is this environment's Python),
#    then the explorer's display test on Colab's ipywidgets 7.7.1, which is installed here.
t0=$(clock)
"$PY" - <<'EOF'
import sys
import nbformat
from nbclient import NotebookClient
code = "import sys, torch, IPython, ipywidgets; print(sys.executable, torch.__version__, IPython.__version__, ipywidgets.__version__)"
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
NotebookClient(nb, timeout=120, kernel_name="python3").execute()
words = nb.cells[0].outputs[0]["text"].split()
print("[colab lane] the kernel: {} torch {} IPython {} ipywidgets {}".format(*words))
if words[0] != sys.executable:
    sys.exit(f"[colab lane] the kernel runs {words[0]}, not this environment's {sys.executable}")
EOF
"$PY" -m pytest -q notebooks
step "notebooks executed in fast mode: $(( $(clock) - t0 )) s"
t0=$(clock)
COURSEKIT_IPYWIDGETS7="$("$PY" -c 'import ipywidgets, os; print(os.path.dirname(os.path.dirname(ipywidgets.__file__)))')" \
  "$PY" -m pytest -q "tests/test_viz.py::test_explorer_displays_a_widget_view_in_a_real_kernel[7]"
step "explorer on ipywidgets 7.7.1: $(( $(clock) - t0 )) s"
step "passed"
