#!/usr/bin/env bash
# Runs the GPU check on a machine with one GPU and no network (docs/full_study.md, "GPU check"):
#   BASIC_COMMIT=$(git rev-parse HEAD) bash benchmarks/gpu_check.sh [benchmarks/gpu_check.py flags, e.g. --out-dir "$OUT"]
#   CHECK=benchmarks/launch_gpu_check.py bash benchmarks/gpu_check.sh --out-dir "$OUT"   # another check
# If .whl/ holds wheels (transformers 5.23.0, deepspeed 0.19.8 and the dependencies the machine lacks),
# they are installed into /tmp/site first; src/ goes on the path, so nothing else is installed. BASIC_COMMIT
# names the measured commit in the JSON where the copied tree has no .git. Before benchmarks/gpu_check.py,
# the CUDA test that a BASIC step never synchronises with the host runs (tests/test_method_sync.py); its
# log goes beside the JSON when --out-dir is given.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"  # bin: the deepspeed launcher
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "
import importlib.util, torch, transformers
deepspeed = importlib.util.find_spec('deepspeed') and __import__('deepspeed').__version__
print('torch', torch.__version__, '| transformers', transformers.__version__, '| deepspeed', deepspeed)"
CHECK="${CHECK:-benchmarks/gpu_check.py}"
if [[ "$CHECK" == benchmarks/gpu_check.py ]] && python3 -c "import pytest" 2>/dev/null; then
  log=/dev/null
  for ((i = 1; i <= $#; i++)); do
    [[ "${!i}" == --out-dir ]] && { j=$((i + 1)); mkdir -p "${!j}"; log="${!j}/gpu_check_sync_test.log"; }
  done
  python3 -m pytest -q -p no:cacheprovider -rs tests/test_method_sync.py 2>&1 | tee "$log" || true
fi
exec python3 "$CHECK" "$@"
