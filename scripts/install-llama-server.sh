#!/usr/bin/env bash
# Install llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) into a venv, built
# portable: usage `bash scripts/install-llama-server.sh .venv/bin/python`.
#
# The registry has only llama-cpp-python's sdist. Built as pip builds it by default
# (GGML_NATIVE, i.e. -march=native), ggml compiles in and selects every kernel the build machine
# has, AMX among them on recent Xeons, and that build faults there on its first prompt of a few
# hundred tokens (issue 26). So it is built once with GGML_NATIVE=OFF: AVX2, FMA, F16C and BMI2
# only, no AVX-512 and no AMX, which every x86-64 machine this project runs on executes. The
# wheel is kept in a folder of pip's cache named after those flags (pip's own wheel cache is
# keyed by the sdist alone and would hand back a native build made earlier), so the build
# (~5 min on 2 idle cores) happens once per machine.
set -euo pipefail
python="${1:?usage: install-llama-server.sh PATH/TO/VENV/python}"
# The version and the flags live in harness/backends/llama_server.py (one copy).
{ read -r version; read -r flags; } < <("$python" -m harness.backends.llama_server --build-settings)
[[ -n "${version:-}" && -n "${flags:-}" ]] || { echo "install-llama-server.sh: harness is not installed in $python" >&2; exit 1; }
pip=("$python" -m pip --disable-pip-version-check)
# One folder per set of flags, so a change of flags never reuses an older build.
wheels="$("${pip[@]}" cache dir)/harness-llama-cpp-$(printf %s "$flags" | sha256sum | cut -c1-12)"

if "$python" -m harness.backends.llama_server --check-build 2>/dev/null; then
  exit 0  # this version is installed, built without AVX-512 or AMX
fi
if ! compgen -G "$wheels/llama_cpp_python-${version}-*.whl" >/dev/null; then
  echo "install-llama-server.sh: building llama-cpp-python ${version} (portable, once per machine, ~5 min)"
  CMAKE_ARGS="$flags" "${pip[@]}" wheel --quiet --no-deps --no-cache-dir \
    "llama-cpp-python==${version}" --wheel-dir "$wheels"
fi
"${pip[@]}" install --quiet --force-reinstall --no-deps "$wheels"/llama_cpp_python-${version}-*.whl
"${pip[@]}" install --quiet --find-links "$wheels" "llama-cpp-python[server]==${version}"
"$python" -m harness.backends.llama_server --check-build
