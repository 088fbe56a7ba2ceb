#!/usr/bin/env bash
# Idempotently create the virtualenv that runs the real Triton Inference Server locally.
#
# nvidia-pytriton 0.7.0 bundles a real `tritonserver` (2.51.0) with the python backend, but it
# needs numpy<2 while the project's main venv has numpy 2: hence a separate venv. Its Python
# also runs the python-backend models of our repositories (preprocess, onnxruntime engine,
# postprocess), so it carries onnxruntime (1.31 works with numpy 1.26) and tritonclient, and
# Pillow: the preprocess model letterboxes/resizes frames with the same PIL bilinear resize as
# offline evaluation.
# It also places Triton's `perf_analyzer` (the load generator scripts/benchmark_serving.py and
# adas.packaging.perf_analyzer drive) under <venv>/perf_analyzer/: PyPI's `perf-analyzer` is only
# a placeholder, but the tritonclient wheel of the server's own version (2.51.0) ships the real
# binary. It links libcudart.so.12 (taken from NVIDIA's PyPI wheel; no GPU is needed to load it)
# and libb64.so.0d (Debian libb64-0d: scripts/setup_system_deps.sh).
# Usage: bash scripts/setup_triton_env.sh   (TRITON_VENV overrides <repo>/.venv-triton)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRITON_VENV:-$REPO/.venv-triton}"
PYTHON="${TRITON_PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.installed-v3"
# Bump the stamp name above whenever these pins change, so existing venvs are refreshed.
PACKAGES=(
  "nvidia-pytriton==0.7.0"
  "numpy>=1.26,<2"
  "onnxruntime>=1.22,<1.32"
  "tritonclient[http,grpc]>=2.60,<2.74"
  "pillow>=12,<13"
)
# perf_analyzer: from the tritonclient wheel matching the server (2.51.0), plus the CUDA runtime.
PERF_ANALYZER_WHEEL="tritonclient==2.51.0"
PERF_ANALYZER_MEMBER="tritonclient-2.51.0.data/data/bin/perf_analyzer"
CUDART_WHEEL="nvidia-cuda-runtime-cu12==12.6.77"
CUDART_MEMBER="nvidia/cuda_runtime/lib/libcudart.so.12"

install_perf_analyzer() {
  local dest="$VENV/perf_analyzer" tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$dest/bin" "$dest/lib"
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: "$PERF_ANALYZER_WHEEL" "$CUDART_WHEEL" -d "$tmp"
  "$VENV/bin/python" - "$tmp" "$dest" "$PERF_ANALYZER_MEMBER" "$CUDART_MEMBER" <<'PY'
import os, pathlib, sys, zipfile
tmp, dest, members = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
targets = {members[0]: dest / "bin" / "perf_analyzer", members[1]: dest / "lib" / "libcudart.so.12"}
for wheel in tmp.glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for member in set(z.namelist()) & set(targets):
            out = targets.pop(member)
            part = out.with_name(out.name + ".part")
            part.write_bytes(z.read(member))
            part.chmod(0o755)
            os.replace(part, out)
assert not targets, f"wheels lack {sorted(targets)}"
PY
  # Fail here if a shared library is missing (libb64.so.0d: bash scripts/setup_system_deps.sh).
  if LD_LIBRARY_PATH="$dest/lib" ldd "$dest/bin/perf_analyzer" | grep -q "not found"; then
    LD_LIBRARY_PATH="$dest/lib" ldd "$dest/bin/perf_analyzer" | grep "not found" >&2
    echo "perf_analyzer is missing shared libraries (libb64.so.0d: bash scripts/setup_system_deps.sh)" >&2
    return 1
  fi
  LD_LIBRARY_PATH="$dest/lib" "$dest/bin/perf_analyzer" --version >/dev/null 2>&1 \
    || LD_LIBRARY_PATH="$dest/lib" "$dest/bin/perf_analyzer" --help >/dev/null
}

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
  install_perf_analyzer
  touch "$STAMP"
fi
echo "$VENV"
