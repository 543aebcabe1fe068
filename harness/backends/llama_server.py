"""Start llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``) on loopback.

Used by the tests, the HTTP benchmark and anyone who wants a local server for the ``openai``
backend without a GPU: it serves a GGUF file (by default the embedded SmolLM2, the same file
the transformers backend loads) on 127.0.0.1 at a free port, waits until ``GET /v1/models``
answers, and stops it on exit. Only the standard library is used here; the server itself
runs in its own Python process (``python -m llama_cpp.server``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessError

SERVER_PACKAGE = "llama_cpp"
LLAMA_CPP_VERSION = "0.3.36"
# ggml's build options for a llama.cpp that runs on every x86-64 machine of this project's kind:
# no -march=native, no AVX-512, no AMX (AVX2, FMA, F16C and BMI2 stay on).
PORTABLE_CMAKE_ARGS = " ".join(
    f"-DGGML_{option}=OFF" for option in ("NATIVE", "AVX512", "AMX_TILE", "AMX_INT8", "AMX_BF16")
)
INSTALL_HINT = (
    "bash scripts/install-llama-server.sh .venv/bin/python (builds llama-cpp-python "
    f"{LLAMA_CPP_VERSION} portable, once per machine, ~5 min; outside a checkout: "
    f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --no-cache-dir '
    f'"llama-cpp-python[server]=={LLAMA_CPP_VERSION}")'
)
DEFAULT_CONTEXT = 8192  # SmolLM2's positions; a 20-passage window needs more than 2048
START_SECONDS = 180.0
# Compiled-in CPU features that not every x86-64 machine of this project's kind runs: AMX
# kernels, which a native build selects on recent Xeons, fault there (issue 26); AVX-512 is
# missing on many CPUs. scripts/install-llama-server.sh builds without both.
NON_PORTABLE_FEATURES = ("AMX", "AVX512")


def server_installed() -> bool:
    """Whether ``llama-cpp-python`` (with its server) is importable, without importing it."""
    return (
        importlib.util.find_spec(SERVER_PACKAGE) is not None
        and importlib.util.find_spec("uvicorn") is not None
    )


def build_features() -> dict[str, str]:
    """The CPU features the installed llama.cpp was compiled with (``AVX2 -> "1"``), as its
    ``llama_print_system_info`` reports them. Imports ``llama_cpp`` (loads its library)."""
    import llama_cpp

    return parse_system_info(llama_cpp.llama_print_system_info().decode(errors="replace"))


def parse_system_info(info: str) -> dict[str, str]:
    """``"CPU : SSE3 = 1 | AVX2 = 1 | "`` -> ``{"SSE3": "1", "AVX2": "1"}``."""
    features: dict[str, str] = {}
    for part in info.split("|"):
        name, sep, value = part.partition("=")
        if sep:
            features[name.split(":")[-1].strip()] = value.strip()
    return features


def non_portable_features(features: dict[str, str]) -> list[str]:
    """The enabled features among those that fault or are missing on some machines."""
    return sorted(
        name
        for name, value in features.items()
        if value == "1" and any(name.startswith(prefix) for prefix in NON_PORTABLE_FEATURES)
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LlamaServer:
    """``with LlamaServer(gguf, alias="smollm2-135m") as server: server.base_url``."""

    gguf: Path
    alias: str
    n_ctx: int = DEFAULT_CONTEXT
    port: int = 0
    threads: int | None = None
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf),
            "--model_alias",
            self.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
        ]
        if self.threads:
            command += ["--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)]
        return command

    def __enter__(self) -> LlamaServer:
        if not server_installed():
            raise HarnessError(f"llama.cpp's server is not installed: {INSTALL_HINT}")
        if not self.gguf.is_file():
            raise HarnessError(f"GGUF model file not found: {self.gguf}")
        self.port = self.port or free_port()
        self._log = self.log_path.open("wb") if self.log_path else None
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            self._wait()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            problem = self.failure()
            if problem is not None:
                raise HarnessError(f"{problem} before it answered")
            if self.models() is not None:
                return
            time.sleep(0.25)
        raise HarnessError(f"llama.cpp server did not answer on {self.base_url} in time")

    def failure(self) -> str | None:
        """One line saying how the server process ended (exit code or signal, its log's last
        line), or None while it runs. A fault in llama.cpp's kernels kills it with SIGSEGV or
        SIGILL; clients only see refused connections, so this is where the cause is told."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        how = f"exited with code {code}"
        if code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
            if -code in (signal.SIGSEGV, signal.SIGILL, signal.SIGBUS):
                how += (
                    " (a fault in llama.cpp's CPU kernels? check its build: "
                    "python -m harness.backends.llama_server --check-build)"
                )
        line = f"llama.cpp server for {self.alias!r} on {self.base_url} {how}"
        if self.log_path is not None:
            if self._log is not None:
                self._log.flush()
            tail = _last_line(self.log_path)
            line += f"; its log ({self.log_path}) ends: {tail!r}" if tail else ""
        return line

    def models(self) -> list[str] | None:
        """The served model ids, or None while the server does not answer."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as reply:
                data: Any = json.loads(reply.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return [m.get("id") for m in data.get("data", [])]

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _last_line(path: Path) -> str:
    try:
        lines = path.read_bytes()[-4096:].decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:200] if lines else ""


def embedded_server(alias: str = "smollm2-135m", **kwargs: Any) -> LlamaServer:
    """A server for an embedded model's GGUF file (the file transformers loads too)."""
    from harness.models.loading import embedded_gguf_path

    return LlamaServer(embedded_gguf_path(alias), alias=alias, **kwargs)


def main() -> None:
    """``python -m harness.backends.llama_server [--port P]``: serve the embedded SmolLM2 until
    interrupted; prints the base URL once the server answers."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m", help="an embedded model name")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--log", type=Path, default=None, help="write the server's output here")
    parser.add_argument(
        "--build-settings",
        action="store_true",
        help="print the llama-cpp-python version and the portable CMake flags, one per line",
    )
    parser.add_argument(
        "--check-build",
        action="store_true",
        help=f"exit 0 if llama-cpp-python {LLAMA_CPP_VERSION} is installed, built without AMX "
        "and AVX-512, else 1",
    )
    args = parser.parse_args()
    if args.build_settings:
        print(LLAMA_CPP_VERSION, PORTABLE_CMAKE_ARGS, sep="\n")
        return
    if args.check_build:
        sys.exit(_check_build())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with embedded_server(
        args.model, port=args.port, threads=args.threads, log_path=args.log
    ) as server:
        print(server.base_url, flush=True)
        try:
            assert server.process is not None
            server.process.wait()
        except KeyboardInterrupt:
            return
        problem = server.failure()
        if problem is not None and server.process.returncode != 0:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(1)


def _check_build() -> int:
    if not server_installed():
        print(f"llama.cpp's server is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 1
    from importlib.metadata import version

    installed = version("llama-cpp-python")
    if installed != LLAMA_CPP_VERSION:
        print(
            f"llama-cpp-python {installed} is installed, not {LLAMA_CPP_VERSION}", file=sys.stderr
        )
        return 1
    enabled = non_portable_features(build_features())
    if enabled:
        print(
            f"llama.cpp was built with {', '.join(enabled)} (a native build); reinstall it "
            "portable: bash scripts/install-llama-server.sh .venv/bin/python",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    main()
