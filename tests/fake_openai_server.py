"""A FAKE OpenAI-compatible server for tests of retries, timeouts and errors.

It runs no model. It answers ``GET /v1/models``, ``POST /v1/completions`` and ``POST
/v1/chat/completions`` on 127.0.0.1 with canned answers built by ``answer(body)`` (a
completions answer, which the chat route sends in the chat shape, see :func:`as_chat`; an
answer already in the chat shape goes out as it is), and
before answering it takes the next fault from a script: ``"429"`` (with ``Retry-After``),
``"500"``, ``"400"`` (a context-overflow message), ``"401"``, ``"malformed"`` (HTTP 200 with
a body that is not JSON), ``"slow"`` (answers after ``slow_seconds``), ``"drop"`` (closes the
connection without answering), ``"no-logprobs"`` and ``"no-text"`` (HTTP 200, the answer
without its log-probs or with ``null`` text, chat: ``null`` content: what a server that
ignores ``logprobs`` or a broken replica sends), ``"wrong-model"`` (the answer names
``OTHER_MODEL``), ``"huge"`` (HTTP 200, a valid answer whose text takes ``huge_bytes``, sent
without a length until the client hangs up), ``"trickle"`` (a valid answer sent in 100
pieces spread over ``slow_seconds``, each piece well within any read timeout). ``models`` is
what ``GET /v1/models`` lists (ids, or entries with more fields such as vLLM's ``root``);
tests may change it between backends.
Every request body it receives is recorded, so tests count what was sent. The real server
the tests also use is llama.cpp's (see ``harness/backends/llama_server.py``); this fake only
makes the failures that a real server does not produce on demand.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAKE_MODEL = "fault-injecting-fake"
OTHER_MODEL = "other-model"


def as_chat(answer: dict[str, Any]) -> dict[str, Any]:
    """A completions answer in the shape ``/v1/chat/completions`` answers (llama.cpp's and
    OpenAI's): the text as ``message.content``, the first token's alternatives as
    ``logprobs.content[0].top_logprobs``, a list of ``{token, logprob, bytes}``."""
    choice = dict(answer["choices"][0])
    if "message" in choice:  # already a chat answer (a test's own answer function)
        return answer
    text = choice.pop("text")
    choice["message"] = {"role": "assistant", "content": text}
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        tops = logprobs.get("top_logprobs") or [{}]
        tokens = logprobs.get("tokens") or [text]
        alternatives = [
            {"token": token, "logprob": value, "bytes": list(token.encode())}
            for token, value in tops[0].items()
        ]
        first = max(alternatives, key=lambda a: a["logprob"], default=None)
        choice["logprobs"] = {
            "content": [
                {
                    "token": tokens[0],
                    "logprob": first["logprob"] if first else -0.1,
                    "bytes": None,
                    "top_logprobs": alternatives,
                }
            ],
            "refusal": None,
        }
    return {**answer, "object": "chat.completion", "choices": [choice]}


def default_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A completion whose logprobs list every biased token (descending by token id order;
    ``A`` alone when nothing is biased) and whose text is the numbered answer ``[1] > [2]``."""
    bias = body.get("logit_bias") or {}
    top = {f"tok{key}": -float(i) for i, key in enumerate(bias)} or {"A": -0.1}
    text = "[1] > [2]" if body.get("max_tokens", 1) > 1 else "A"
    logprobs = {"tokens": [text], "top_logprobs": [top]} if body.get("logprobs") else None
    return {
        "id": "fake",
        "object": "text_completion",
        "model": FAKE_MODEL,
        "system_fingerprint": "fp-fake",
        "choices": [
            {
                "index": 0,
                "text": text,
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }


class FakeServer:
    """Start with ``with FakeServer(faults=[...]) as server: server.base_url``."""

    def __init__(
        self,
        faults: Iterable[str] = (),
        answer: Callable[[dict[str, Any]], dict[str, Any]] = default_answer,
        slow_seconds: float = 2.0,
        retry_after: str = "0",
        models: Iterable[str | dict[str, Any]] = (FAKE_MODEL,),
        huge_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.faults: deque[str] = deque(faults)
        self.answer = answer
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.models = [m if isinstance(m, dict) else {"id": m} for m in models]
        self.huge_bytes = huge_bytes
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    def _next_fault(self) -> str | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def _send_huge(self, answer: dict[str, Any]) -> None:
                """``answer`` with ``huge_bytes`` of text, no Content-Length (the body ends
                when the connection does), written until done or the client hangs up."""
                choice = answer["choices"][0]
                if "message" in choice:
                    choice["message"]["content"] = "@"
                else:
                    choice["text"] = "@"
                head, tail = json.dumps(answer).encode().split(b"@")
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                piece = b"[1] > [2] " * 6400
                try:
                    self.wfile.write(head)
                    for _ in range(fake.huge_bytes // len(piece)):
                        self.wfile.write(piece)
                    self.wfile.write(tail)
                except OSError:  # the client stopped reading: what a bounded client does
                    pass

            def _trickle(self, payload: bytes) -> None:
                """``payload`` in 100 pieces spread over ``slow_seconds``."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                step = -(-len(payload) // 100)
                try:
                    for start in range(0, len(payload), step):
                        self.wfile.write(payload[start : start + step])
                        self.wfile.flush()
                        if fake.stop_event.wait(fake.slow_seconds / 100):
                            return
                except OSError:
                    pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    listing = {"object": "list", "data": fake.models}
                    self._send(200, json.dumps(listing).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                route = self.path.rstrip("/")
                if route not in ("/v1/completions", "/v1/chat/completions"):
                    self._send(404, b'{"error": {"message": "no such route"}}')
                    return
                chat = route == "/v1/chat/completions"

                def answer(body: dict[str, Any]) -> dict[str, Any]:
                    made = fake.answer(body)
                    return as_chat(made) if chat else made

                with fake.lock:
                    fake.bodies.append(body)
                fault = fake._next_fault()
                if fault == "429":
                    message = b'{"error": {"message": "rate limited"}}'
                    self._send(429, message, {"Retry-After": fake.retry_after})
                elif fault == "500":
                    self._send(500, b'{"error": {"message": "internal error"}}')
                elif fault == "400":
                    message = "This model's maximum context length is 8192 tokens"
                    self._send(400, json.dumps({"error": {"message": message}}).encode())
                elif fault == "401":
                    self._send(401, b'{"error": {"message": "invalid api key"}}')
                elif fault == "malformed":
                    self._send(200, b"<html>this is not json")
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                elif fault == "huge":
                    self._send_huge(answer(body))
                elif fault == "trickle":
                    self._trickle(json.dumps(answer(body)).encode())
                else:
                    if fault == "slow":
                        fake.stop_event.wait(fake.slow_seconds)
                    self._send(200, json.dumps(damaged(answer(body), fault)).encode())

        return Handler


def damaged(answer: dict[str, Any], fault: str | None) -> dict[str, Any]:
    """``answer`` as a faulty server sends it: without log-probs, with ``null`` text or
    from another model."""
    if fault == "no-logprobs":
        answer["choices"][0]["logprobs"] = None
    elif fault == "no-text":
        choice = answer["choices"][0]
        if "message" in choice:
            choice["message"]["content"] = None
        else:
            choice["text"] = None
    elif fault == "wrong-model":
        answer["model"] = OTHER_MODEL
    return answer


def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``seconds`` pass (no timing is asserted with it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
