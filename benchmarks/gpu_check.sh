#!/usr/bin/env bash
# Runs the GPU check on a machine with one GPU and no network (docs/full_study.md, "GPU check"):
#   bash benchmarks/gpu_check.sh [benchmarks/gpu_check.py flags, e.g. --out-dir "$OUT"]
#   CHECK=benchmarks/launch_gpu_check.py bash benchmarks/gpu_check.sh --out-dir "$OUT"   # another check
# If .whl/ holds wheels (transformers 5.23.0, deepspeed 0.19.8 and the dependencies the machine lacks),
# they are installed into /tmp/site first; src/ goes on the path, so nothing else is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"  # bin: the deepspeed launcher
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, '| transformers', transformers.__version__, '| deepspeed', deepspeed.__version__)"
exec python3 "${CHECK:-benchmarks/gpu_check.py}" "$@"
