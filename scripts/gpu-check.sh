#!/usr/bin/env bash
# The GPU check (docs/gpu-check.md). On the device machine, from the repository root:
#     scripts/gpu-check.sh                 # python3 there + gpu-carry/; writes $OUT/gpu-check/
# Here, once, to build the carry folder (wheels + SmolLM2's tokenizer, < 64 MiB):
#     PYTHON=.venv/bin/python scripts/gpu-check.sh --prepare
# Extra arguments go to benchmarks/gpu_check.py (--mode cpu, --parts, --out ...).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
carry="${GPU_CARRY:-gpu-carry}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "gpu-check: $("$python" -V 2>&1) is older than the Python 3.11 harness needs" >&2
    exit 2
fi
if [[ "${1:-}" == "--prepare" ]]; then
    exec "$python" benchmarks/gpu_check.py --prepare "$carry"
fi
out="${OUT:-runs}/gpu-check"
# 470 s: the check starts no cell after 380 s and no memory-fill call past 440 s;
# this bounds it under 8 minutes whatever hangs.
exec timeout 470 "$python" benchmarks/gpu_check.py --carry "$carry" --out "$out" "$@"
