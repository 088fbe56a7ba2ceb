#!/usr/bin/env bash
# Idempotently create the virtualenv that runs the real Triton Inference Server locally.
#
# nvidia-pytriton 0.7.0 bundles a real `tritonserver` (2.51.0) with the python backend, but it
# needs numpy<2 while the project's main venv has numpy 2: hence a separate venv. Its Python
# also runs the python-backend models of our repositories (preprocess, onnxruntime engine,
# postprocess), so it carries onnxruntime (1.31 works with numpy 1.26) and tritonclient, and
# Pillow: the preprocess model letterboxes/resizes frames with the same PIL bilinear resize as
# offline evaluation.
# Usage: bash scripts/setup_triton_env.sh   (TRITON_VENV overrides <repo>/.venv-triton)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRITON_VENV:-$REPO/.venv-triton}"
PYTHON="${TRITON_PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.installed-v2"
# Bump the stamp name above whenever these pins change, so existing venvs are refreshed.
PACKAGES=(
  "nvidia-pytriton==0.7.0"
  "numpy>=1.26,<2"
  "onnxruntime>=1.22,<1.32"
  "tritonclient[http,grpc]>=2.60,<2.74"
  "pillow>=12,<13"
)

if [[ ! -f "$STAMP" ]]; then
  # The python-backend stub is built for 3.11 and links libpython of the same minor version.
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  # Fail here, not in a test, if the bundled server binary is not where the harness expects it.
  "$VENV/bin/python" - <<'PY'
import pathlib, pytriton
root = pathlib.Path(pytriton.__file__).parent / "tritonserver"
for rel in ("bin/tritonserver", "backends/python/libtriton_python.so",
            "python_backend_stubs/3.11/triton_python_backend_stub"):
    assert (root / rel).exists(), f"nvidia-pytriton lacks {rel}"
import numpy, onnxruntime, PIL, tritonclient.http, tritonclient.grpc  # noqa: F401
assert numpy.__version__.startswith("1."), numpy.__version__
PY
  touch "$STAMP"
fi
echo "$VENV"
