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
INSTALL_HINT = 'pip install "llama-cpp-python[server]==0.3.36" (builds from source, ~5 min)'
DEFAULT_CONTEXT = 8192  # SmolLM2's positions; a 20-passage window needs more than 2048
START_SECONDS = 180.0


def server_installed() -> bool:
    """Whether ``llama-cpp-python`` (with its server) is importable, without importing it."""
    return (
        importlib.util.find_spec(SERVER_PACKAGE) is not None
        and importlib.util.find_spec("uvicorn") is not None
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
            assert self.process is not None
            if self.process.poll() is not None:
                where = f" (see {self.log_path})" if self.log_path else ""
                raise HarnessError(
                    f"llama.cpp server exited with code {self.process.returncode} before it "
                    f"answered{where}"
                )
            if self.models() is not None:
                return
            time.sleep(0.25)
        raise HarnessError(f"llama.cpp server did not answer on {self.base_url} in time")

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
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with embedded_server(args.model, port=args.port, threads=args.threads) as server:
        print(server.base_url, flush=True)
        try:
            assert server.process is not None
            server.process.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
