"""A model behind an OpenAI-compatible HTTP server: vLLM, SGLang, TGI, llama.cpp, a hosted API.

The methods stay what they are on transformers: prompts are rendered with a LOCAL tokenizer
(its chat template) exactly as on the other backends, decoded back to text and sent as the
``prompt`` of ``/v1/completions`` — the server applies no template of its own, so the model
sees the harness's prompt. Which tokenizer rendered and counted is recorded, next to the
server's own prompt-token count per request.

* FIRST and pointwise (next-token log-probs): ``max_tokens`` 1, ``temperature`` 0,
  ``logprobs`` = ``top_logprobs`` alternatives; with ``logit_bias`` the answer tokens get a
  large bias so they are among the alternatives. Servers differ in whether the returned
  log-probs include the bias (vLLM: no, llama.cpp: yes); either way the answer tokens keep
  their relative order, but the probability mass and "was an identifier the top token" are
  only meaningful without it — each request records whether a bias was sent, and every
  answer token the server did not return is ``-inf`` and counted per window.
* RankGPT-style generation: greedy (explicit ``temperature`` 0), ``max_tokens`` = the
  method's answer budget, the model's end-of-turn tokens as ``stop`` strings.

``endpoint: chat`` sends the chat turns the method rendered from (``TokenBatch.chats``) to
``/v1/chat/completions`` instead, and the server applies its own template: no answer can
be primed, so FIRST and pointwise read the reply's first token's ``top_logprobs``
(``logprobs: true``); generation sends no stop strings (the server ends the turn). The
local rendering is then only an estimate of the prompt tokens; the server's ``usage`` is
kept per request.

Transport: ``httpx`` (one synchronous client with a connection pool, safe across threads),
imported only when a backend opens. ``concurrency`` requests are in flight at once (a thread
pool); 429, 5xx, dropped connections and timeouts are retried ``max_retries`` times with
exponential backoff and jitter, or after the server's ``Retry-After``. Every answer is
checked before it counts or is cached (log-probs or text present, the accepted model);
an invalid one is asked again ``invalid_retries`` times, then recorded as invalid (the
call's record says why; the method ranks that window by its fallback and the run counts the
order as invalid, see :mod:`harness.validity`), never cached. Each valid answer is
kept in an on-disk cache keyed by (URL, model, the served model as ``GET /models`` lists
it, full request body), so a resumed or repeated run sends nothing twice; in a dry run no
completion is sent (only ``GET /models``) and the requests that would be are counted.
Every failure is one line naming the URL and what went wrong.

The request builders and response readers are pure functions, unit-tested without a server.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.backends.base import (
    Backend,
    Capability,
    Generation,
    GenerationRequest,
    NextTokenScores,
    TokenBatch,
    Turns,
    eos_token_ids,
)
from harness.backends.params import ModelParams, OpenAIParams
from harness.context import RunContext
from harness.errors import HarnessError, MissingExtraError
from harness.files import user_cache_dir

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
OPEN_TIMEOUT = 10.0  # seconds for the start-up GET /models
KEPT_ERROR_CHARS = 200
REPLY_ALLOWANCE = 64 * 1024  # bytes any reply may take: ids, usage, fingerprint, an error page
TOKEN_ALLOWANCE = 1024  # bytes per generated token and per log-prob alternative of each
LISTING_LIMIT = 4 * 1024 * 1024  # GET /models: a hosted API lists hundreds of models


# --- request bodies -------------------------------------------------------------------------


def logprob_body(
    model: str,
    prompt: str,
    answer_ids: Sequence[int],
    *,
    top_logprobs: int,
    bias: float | None,
) -> dict[str, Any]:
    """``/v1/completions`` body for one greedy token and the top alternatives' log-probs;
    ``bias`` (unless None) is added to the answer tokens' logits."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": int(top_logprobs),
    }
    if bias is not None:
        body["logit_bias"] = {str(int(i)): float(bias) for i in answer_ids}
    return body


def generation_body(
    model: str, prompt: str, request: GenerationRequest, stop: Sequence[str]
) -> dict[str, Any]:
    """``/v1/completions`` body for generation: explicit temperature (greedy at 0), the
    answer budget as ``max_tokens``, stop strings unless the request ignores them."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": int(request.max_new_tokens),
        "temperature": float(request.temperature),
        "top_p": 1.0,
    }
    if not request.ignore_stop and stop:
        body["stop"] = list(stop)
    if request.temperature > 0 and request.seed is not None:
        body["seed"] = int(request.seed) % (2**31)
    return body


def messages(turns: Turns) -> list[dict[str, str]]:
    """Chat turns as the API's ``messages``."""
    return [{"role": role, "content": content} for role, content in turns]


def chat_body(model: str, turns: Turns, request: GenerationRequest) -> dict[str, Any]:
    """``/v1/chat/completions`` body for generation: the server applies its chat template and
    ends the reply at its end of turn (no stop strings); temperature explicit, greedy at 0."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages(turns),
        "max_tokens": int(request.max_new_tokens),
        "temperature": float(request.temperature),
        "top_p": 1.0,
    }
    if request.temperature > 0 and request.seed is not None:
        body["seed"] = int(request.seed) % (2**31)
    return body


def chat_logprob_body(
    model: str,
    turns: Turns,
    answer_ids: Sequence[int],
    *,
    top_logprobs: int,
    bias: float | None,
) -> dict[str, Any]:
    """``/v1/chat/completions`` body for the first token of the reply and its top
    alternatives' log-probs (``logprobs: true``, ``top_logprobs``); ``bias`` as in
    :func:`logprob_body`."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages(turns),
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": int(top_logprobs),
    }
    if bias is not None:
        body["logit_bias"] = {str(int(i)): float(bias) for i in answer_ids}
    return body


# --- response readers -----------------------------------------------------------------------


@dataclass(frozen=True)
class NextToken:
    """What one completion says about its single generated token."""

    logprobs: tuple[float, ...]  # per answer token; -inf where the server did not return it
    top_token: str | None  # the most likely alternative the server listed
    generated_tokens: int


def first_choice(response: Mapping[str, Any], url: str) -> Mapping[str, Any]:
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise HarnessError(f"{url} answered without 'choices': {_snippet(response)}")
    return choices[0]


def first_alternatives(choice: Mapping[str, Any]) -> Any:
    """The first generated token's top alternatives as the server sent them: a completions
    answer's ``logprobs.top_logprobs[0]`` (a mapping of token text to log-prob), or a chat
    answer's ``logprobs.content[0].top_logprobs`` (a list of ``{token, logprob}``) turned into
    such a mapping where every entry has that shape; None where there are none."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    if "content" in logprobs:  # chat completions
        content = logprobs.get("content")
        if not isinstance(content, list) or not content or not isinstance(content[0], dict):
            return None
        tops = content[0].get("top_logprobs")
        if not isinstance(tops, list) or not tops:
            return None
        if not all(isinstance(t, dict) and isinstance(t.get("token"), str) for t in tops):
            return tops
        return {t["token"]: t.get("logprob") for t in tops}
    tops = logprobs.get("top_logprobs")
    return tops[0] if isinstance(tops, list) and tops else None


def read_next_token(
    response: Mapping[str, Any], answers: Sequence[str], url: str = "the server"
) -> NextToken:
    """The answer tokens' log-probs from a completions or chat response (``answers``: each
    answer token as text, matched against the tokens of ``top_logprobs``)."""
    choice = first_choice(response, url)
    logprobs = choice.get("logprobs") or {}
    found = first_alternatives(choice)
    step = found if isinstance(found, dict) else {}
    values = tuple(float(step[a]) if a in step else -math.inf for a in answers)
    top = max(step, key=lambda k: step[k]) if step else None
    tokens = logprobs.get("tokens", logprobs.get("content"))
    usage = response.get("usage") or {}
    if isinstance(tokens, list):
        generated = len(tokens)
    elif isinstance(usage.get("completion_tokens"), int):
        generated = int(usage["completion_tokens"])
    else:
        generated = 1 if choice.get("text") or (choice.get("message") or {}).get("content") else 0
    return NextToken(values, top, generated)


def read_text(response: Mapping[str, Any], url: str = "the server") -> tuple[str, bool]:
    """Answer text and whether a stop condition ended it, from a completions or chat answer."""
    choice = first_choice(response, url)
    if "message" in choice:
        text = (choice.get("message") or {}).get("content") or ""
    else:
        text = choice.get("text") or ""
    if not isinstance(text, str):
        raise HarnessError(f"{url} answered with non-text content: {_snippet(choice)}")
    return text, choice.get("finish_reason") == "stop"


# --- what a valid answer is ----------------------------------------------------------------

# Why an answer cannot be used (None: it can). Checked before an answer counts or is cached,
# so an answer that would silently rank by doc id (no log-probs) is asked again or refused.
Check = Callable[[Mapping[str, Any]], str | None]


def choices_problem(response: Mapping[str, Any]) -> str | None:
    """Every answer needs a first choice that is an object."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return f"no 'choices' ({_snippet(response)})"
    return None


def logprobs_problem(response: Mapping[str, Any]) -> str | None:
    """FIRST and pointwise read the first generated token's ``top_logprobs`` (completions:
    ``choices[0].logprobs.top_logprobs[0]``; chat: ``choices[0].logprobs.content[0]
    .top_logprobs``): it must be a non-empty mapping (chat: list) of token text to a finite
    number."""
    problem = choices_problem(response)
    if problem is not None:
        return problem
    choice = response["choices"][0]
    hint = "(does the server return log-probs?)"
    if "message" in choice:  # chat completions
        step = first_alternatives(choice)
        if step is None:
            return f"no top_logprobs in choices[0].logprobs.content[0] {hint}"
        if isinstance(step, list):
            return f"top_logprobs of the first token has an entry without a token: {_snippet(step)}"
    else:
        logprobs = choice.get("logprobs")
        tops = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
        if not isinstance(tops, list) or not tops:
            return f"no top_logprobs in choices[0].logprobs {hint}"
        step = tops[0]
    if not isinstance(step, dict) or not step:
        return f"top_logprobs of the first generated token is empty or not a mapping: {step!r}"
    for token, value in step.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"top_logprobs[0][{token!r}] is {value!r}, not a number"
        if not math.isfinite(value):
            return f"top_logprobs[0][{token!r}] is {value!r}, not a finite number"
    return None


def text_problem(response: Mapping[str, Any]) -> str | None:
    """Generation reads ``choices[0].text`` (chat: ``choices[0].message.content``): it must be
    a string (empty is an answer)."""
    problem = choices_problem(response)
    if problem is not None:
        return problem
    choice = response["choices"][0]
    if "message" in choice:
        message = choice["message"]
        text = message.get("content") if isinstance(message, dict) else message
        where = "choices[0].message.content"
    else:
        text, where = choice.get("text"), "choices[0].text"
    if not isinstance(text, str):
        return f"{where} is {_one_line(repr(text))[:80]}, not a string"
    return None


def model_problem(response: Mapping[str, Any], accepted: Collection[str]) -> str | None:
    """An answer that names its model must name an accepted one exactly (the requested
    name or the preset's ``served_model``): another model's answer is not this run's."""
    model = response.get("model")
    if model is None or model in accepted:
        return None
    return f"answered as model {model!r}, not {' or '.join(map(repr, sorted(accepted)))}"


def accepted_model(model: str, served_model: str | None, listed: Sequence[str], url: str) -> str:
    """The listed model id this run accepts: ``served_model`` where the preset names one,
    else ``model`` itself. A server that serves neither is refused before anything is
    sent, so a run is never recorded under a model that did not answer it."""
    wanted = served_model or model
    if wanted in listed:
        return wanted
    shown = ", ".join(map(repr, listed[:5])) or "no model"
    if len(listed) > 5:
        shown += f" and {len(listed) - 5} more"
    if served_model is not None:
        raise HarnessError(
            f"{url} serves {shown}, not served_model {served_model!r}; set served_model to an "
            "id it lists"
        )
    raise HarnessError(
        f"{url} serves {shown}, not {model!r}; point base_url at a server of {model!r}, or "
        "accept the model it serves with served_model: <id>"
    )


def call_record(response: Mapping[str, Any], answer: Answer) -> dict[str, Any]:
    """Per-request provenance: the server's model name and fingerprint, token usage, whether
    it came from the cache and how many attempts it took. Methods store it in their outputs'
    facts and count it with :meth:`harness.usage.HttpUsage.of_record`."""
    usage = response.get("usage") or {}
    record: dict[str, Any] = {
        "server_model": response.get("model"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "cached": answer.cached,
        "attempts": answer.attempts,
    }
    if response.get("system_fingerprint"):
        record["system_fingerprint"] = response["system_fingerprint"]
    if answer.dry:
        record = {"dry_run": True, "cached": False}
    if answer.invalid is not None:
        record["invalid"] = answer.invalid
    return record


# --- retries, errors, cache keys ------------------------------------------------------------


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)


def retry_delay(
    attempt: int, retry_after: float | None, base: float, cap: float, rng: random.Random
) -> float:
    """Wait before retry ``attempt`` (0-based): what the server asked for (capped at ``cap``),
    else ``base`` * 2^attempt capped at ``cap``, with full jitter in its upper half."""
    if retry_after is not None:
        return min(retry_after, cap)
    backoff = min(base * 2.0**attempt, cap)
    return backoff * rng.uniform(0.5, 1.0)


def reply_limit(body: Mapping[str, Any]) -> int:
    """The most bytes a reply to ``body`` may take: a fixed allowance plus a generous one per
    generated token and per log-prob alternative of each (a token's escaped text and its
    log-prob take far less), so one runaway answer cannot fill memory or the cache."""
    tokens = body.get("max_tokens")
    tokens = tokens if isinstance(tokens, int) and tokens > 0 else 1
    alternatives = body.get("logprobs")  # completions: how many; chat: true, then top_logprobs
    if alternatives is True:
        alternatives = body.get("top_logprobs")
    alternatives = alternatives if type(alternatives) is int and alternatives > 0 else 0
    return REPLY_ALLOWANCE + TOKEN_ALLOWANCE * tokens * (1 + alternatives)


def cache_key(url: str, model: str, served: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """sha256 of (endpoint URL, model, served model, full request body), canonical JSON:
    ``served`` (see :func:`served_identity`) keeps the answers of another model behind the
    same URL and name apart."""
    payload = {"url": url, "model": model, "served": dict(served), "body": body}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


# Fields of a GET /models entry that say which model is served: its id, and where the server
# lists them the weights it was loaded from (vLLM's root and parent). Left out: what changes
# from one listing to the next (vLLM's created time, permission ids).
SERVED_FIELDS = ("id", "root", "parent")


def served_identity(listing: Sequence[Mapping[str, Any]], accepted: str) -> dict[str, str]:
    """What the server's model list says about the accepted model, for the cache key."""
    entry = next(m for m in listing if str(m.get("id")) == accepted)
    return {name: str(entry[name]) for name in SERVED_FIELDS if entry.get(name) is not None}


def http_error_line(status: int, url: str, text: str, api_key_env: str | None) -> str:
    """One line for an HTTP error that is not retried (or still failing after retries)."""
    message = _server_message(text)
    if status == 401 or status == 403:
        where = f"the key in ${api_key_env}" if api_key_env else "no API key (set api_key_env)"
        return f"HTTP {status} from {url}: the server refused {where}: {message}"
    if status == 404:
        return (
            f"HTTP 404 from {url}: no such endpoint or model; check base_url (it usually ends "
            f"in /v1) and model: {message}"
        )
    if status == 400:
        hint = ""
        if any(w in message.lower() for w in ("context", "too long", "maximum", "exceed")):
            hint = " (the prompt does not fit the model's context: lower window_size or set "
            hint += "max_candidate_words)"
        return f"HTTP 400 from {url}: the server rejected the request{hint}: {message}"
    return f"HTTP {status} from {url}: {message}"


def _server_message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return _one_line(text) or "(empty answer)"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return _one_line(str(error["message"]))
    if isinstance(error, str):
        return _one_line(error)
    if isinstance(data, dict) and data.get("detail"):
        return _one_line(str(data["detail"]))
    return _one_line(text)


def _one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat[:KEPT_ERROR_CHARS] + ("…" if len(flat) > KEPT_ERROR_CHARS else "")


def _snippet(value: Any) -> str:
    return _one_line(json.dumps(value, default=str))


# --- the on-disk cache ----------------------------------------------------------------------


class RequestCache:
    """Answers on disk, one JSON file per (URL, model, served model, body) key, written
    atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent, or a damaged file: ask again
        response = data.get("response") if isinstance(data, dict) else None
        return response if isinstance(response, dict) else None

    def put(
        self,
        key: str,
        url: str,
        served: Mapping[str, str],
        body: Mapping[str, Any],
        response: Any,
    ) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        record = {"url": url, "served": dict(served), "body": body, "response": response}
        tmp.write_text(json.dumps(record), "utf-8")
        os.replace(tmp, path)


# --- the backend ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP reply, read within its byte limit and deadline."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Overdue(Exception):
    """A reply still arriving when its request's deadline passed (a slow trickle of bytes:
    httpx's read timeout is per chunk and never trips on it)."""


@dataclass(frozen=True)
class Answer:
    """One request's answer: the response JSON (empty in a dry run for a request that would
    be sent), whether it came from the cache, attempts made."""

    response: dict[str, Any]
    cached: bool
    attempts: int
    dry: bool = False
    invalid: str | None = None  # why the answer was still invalid after every retry


@dataclass
class Tally:
    """Requests of a backend's lifetime (thread-safe through its lock)."""

    sent: int = 0
    cached: int = 0
    retries: int = 0
    would_send: int = 0  # dry run
    prompt_tokens: int = 0  # server-reported, requests answered by the server or the cache
    completion_tokens: int = 0
    local_prompt_tokens: int = 0  # counted with the local tokenizer, every request
    invalid: int = 0  # requests whose answer stayed invalid after every retry (among sent)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_dict(self) -> dict[str, int]:
        return {
            "requests_sent": self.sent,
            "requests_cached": self.cached,
            "retries": self.retries,
            "requests_would_send": self.would_send,
            "server_prompt_tokens": self.prompt_tokens,
            "server_completion_tokens": self.completion_tokens,
            "local_prompt_tokens": self.local_prompt_tokens,
            "requests_invalid": self.invalid,
        }


class OpenAIBackend(Backend):
    """A model served over the OpenAI-compatible API, prompts rendered here."""

    name = "openai"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.TOKENIZER, Capability.NEXT_TOKEN_LOGPROBS, Capability.GENERATE}
    )
    engine_params: ClassVar[type] = OpenAIParams
    remote: ClassVar[bool] = True

    def __init__(
        self,
        model: ModelParams,
        engine: OpenAIParams,
        context: RunContext,
        *,
        tokenizer: Any,
        tokenizer_name: str,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        import httpx

        self.model_name = model.model
        # Names an answer may give as its model: the one requested, or the one accepted.
        self.accepted_names = frozenset(
            name for name in (model.model, engine.served_model) if name is not None
        )
        self.engine = engine
        self.takes_messages = engine.endpoint == "chat"
        self.dry_run = context.dry_run
        self.base_url = engine.base_url.rstrip("/")
        self.parallel_calls = engine.concurrency
        self._tokenizer = tokenizer
        self.tokenizer_name = tokenizer_name
        self._stopping = threading.Event()
        # Backoff waits on the stop event, so Ctrl-C ends a retry wait at once (tests inject
        # a fake sleep).
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self._rng = random.Random(context.seed)  # jitter only; never touches results
        self._rng_lock = threading.Lock()
        self.tally = Tally()
        self.cache = (
            RequestCache(Path(engine.cache_dir or user_cache_dir("http"))) if engine.cache else None
        )
        # identity: a compressed reply could inflate past the byte limit within one chunk
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        key = os.environ.get(engine.api_key_env) if engine.api_key_env else None
        if engine.api_key_env and not key:
            raise HarnessError(
                f"api_key_env names ${engine.api_key_env}, which is not set in the environment"
            )
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._httpx = httpx
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(engine.timeout, connect=min(engine.timeout, OPEN_TIMEOUT)),
            limits=httpx.Limits(max_connections=engine.concurrency),
        )
        self._pool = ThreadPoolExecutor(
            max_workers=engine.concurrency, thread_name_prefix="harness-http"
        )
        try:
            listing = self._model_listing()
            self.served_models = tuple(str(m.get("id")) for m in listing)
            accepted = accepted_model(
                self.model_name, engine.served_model, self.served_models, self._url("models")
            )
            self.served = served_identity(listing, accepted)
        except BaseException:
            self.close()
            raise
        self._stop_strings = tuple(
            sorted({tokenizer.decode([i]) for i in eos_token_ids(tokenizer)} - {""})
        )

    @classmethod
    def open(
        cls, model: ModelParams, engine: OpenAIParams, context: RunContext, purpose: str
    ) -> OpenAIBackend:
        import importlib.util

        if importlib.util.find_spec("httpx") is None:
            raise MissingExtraError("httpx", "http", purpose)
        name = engine.tokenizer or model.model
        return cls(model, engine, context, tokenizer=load_tokenizer(name), tokenizer_name=name)

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "base_url": self.base_url,
            "endpoint": self.engine.endpoint,
            "served_models": list(self.served_models),
            **({"served_model": self.engine.served_model} if self.engine.served_model else {}),
            "tokenizer": self.tokenizer_name,
            "tokenizer_class": type(self._tokenizer).__name__,
            "top_logprobs": self.engine.top_logprobs,
            "logit_bias": self.engine.logit_bias_value if self.engine.logit_bias else None,
            "client": f"httpx {getattr(self._httpx, '__version__', '?')}",
        }

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def stop_token_ids(self) -> frozenset[int]:
        return eos_token_ids(self._tokenizer)

    def usage(self) -> dict[str, int]:
        """Requests and tokens so far (sent, cached, would be sent in a dry run)."""
        with self.tally.lock:
            return self.tally.to_dict()

    def stop(self) -> None:
        """Interrupted: requests not yet sent are refused and retry waits end; a request in
        flight ends within its timeout."""
        self._stopping.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise HarnessError("request not sent: the run was interrupted")

    # -- methods ---------------------------------------------------------------------------

    def next_token_logprobs(self, batch: TokenBatch, token_ids: Sequence[int]) -> NextTokenScores:
        answers = [self._tokenizer.decode([i]) for i in token_ids]
        if len(set(answers)) != len(answers):
            raise HarnessError(
                f"answer tokens {list(token_ids)} decode to the same text {answers}; the server "
                "names tokens by text, so they cannot be told apart"
            )
        bias = self.engine.logit_bias_value if self.engine.logit_bias else None
        top = max(self.engine.top_logprobs, len(token_ids) if bias is not None else 1)
        if self.takes_messages:
            bodies = [
                chat_logprob_body(self.model_name, turns, token_ids, top_logprobs=top, bias=bias)
                for turns in self._chats(batch)
            ]
        else:
            bodies = [
                logprob_body(self.model_name, p, token_ids, top_logprobs=top, bias=bias)
                for p in self._texts(batch)
            ]
        endpoint = self.engine.endpoint
        results = self._send_all(endpoint, bodies, [len(r) for r in batch.rows], logprobs_problem)
        rows, mass, top_chosen, generated, missing, calls = [], [], [], [], [], []
        for answer in results:
            if answer.dry:
                read = NextToken(tuple(0.0 for _ in answers), answers[0], 1)
            elif answer.invalid is not None:  # nothing to read: every answer token -inf
                read = NextToken(tuple(-math.inf for _ in answers), None, 1)
            else:
                read = read_next_token(answer.response, answers, self._url(endpoint))
            found = [v for v in read.logprobs if v > -math.inf]
            rows.append(read.logprobs)
            mass.append(math.exp(_logsumexp(found)) if found else 0.0)
            top_chosen.append(read.top_token in answers)
            generated.append(read.generated_tokens)
            missing.append(len(answers) - len(found))
            record = call_record(answer.response, answer)
            record["logit_bias"] = bias is not None
            calls.append(record)
        return NextTokenScores(
            logprobs=np.array(rows, dtype=np.float32).reshape(len(rows), len(token_ids)),
            mass=tuple(mass),
            top_is_chosen=tuple(top_chosen),
            generated_tokens=tuple(generated),
            missing=tuple(missing),
            calls=tuple(calls),
        )

    def generate(self, batch: TokenBatch, request: GenerationRequest) -> Generation:
        if self.takes_messages:
            if request.ignore_stop:
                raise HarnessError(
                    "ignore_eos needs endpoint: completions (a chat server ends the reply at "
                    "its end of turn)"
                )
            bodies = [chat_body(self.model_name, t, request) for t in self._chats(batch)]
        else:
            bodies = [
                generation_body(self.model_name, p, request, self._stop_strings)
                for p in self._texts(batch)
            ]
        endpoint = self.engine.endpoint
        results = self._send_all(endpoint, bodies, [len(r) for r in batch.rows], text_problem)
        tokens, texts, stopped, calls = [], [], [], []
        for answer in results:
            unread = answer.dry or answer.invalid is not None  # nothing to read: empty text
            text, stop = ("", False) if unread else read_text(answer.response, self._url(endpoint))
            ids = tuple(self._tokenizer.encode(text, add_special_tokens=False))
            tokens.append(ids)
            texts.append(text)
            stopped.append(stop)
            calls.append(call_record(answer.response, answer))
        return Generation(
            tokens=tuple(tokens),
            texts=tuple(texts),
            stopped=tuple(stopped),
            decode_steps=0,
            calls=tuple(calls),
        )

    # -- transport -------------------------------------------------------------------------

    def _texts(self, batch: TokenBatch) -> list[str]:
        """The rendered prompts, decoded from the token ids the method built (special tokens
        kept, spaces untouched), so the server sees exactly the harness's prompt."""
        return [
            self._tokenizer.decode(
                list(row), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            for row in batch.rows
        ]

    def _chats(self, batch: TokenBatch) -> tuple[Turns, ...]:
        """The batch's prompts as chat turns (endpoint: chat sends these, not the local
        rendering)."""
        if len(batch.chats) != len(batch.rows):
            raise HarnessError(
                "endpoint: chat needs the prompt as chat messages, which this method does not "
                "hand to backends; use endpoint: completions"
            )
        return batch.chats

    def _url(self, endpoint: str) -> str:
        paths = {"completions": "/completions", "chat": "/chat/completions", "models": "/models"}
        path = paths.get(endpoint, "")
        return f"{self.base_url}{path}"

    def _send_all(
        self,
        endpoint: str,
        bodies: Sequence[Mapping[str, Any]],
        local_tokens: Sequence[int],
        check: Check,
    ) -> list[Answer]:
        """Send every body (up to ``concurrency`` in flight), answers in the bodies' order;
        each answer passed ``check``."""
        url = self._url(endpoint)
        with self.tally.lock:
            self.tally.local_prompt_tokens += sum(local_tokens)
        if len(bodies) == 1:
            return [self._send(url, bodies[0], check)]
        futures = [self._pool.submit(self._send, url, body, check) for body in bodies]
        return [f.result() for f in futures]

    def _send(self, url: str, body: Mapping[str, Any], check: Check) -> Answer:
        key = cache_key(url, self.model_name, self.served, body)
        if self.cache is not None:
            hit = self.cache.get(key)
            # An answer cached before it was validated, or damaged since, is asked again.
            if hit is not None and self._problem(hit, check) is None:
                self._count(hit, cached=True)
                return Answer(hit, cached=True, attempts=0)
        if self.dry_run:
            with self.tally.lock:
                self.tally.would_send += 1
            return Answer({}, cached=False, attempts=0, dry=True)
        self._check_stopping()
        response, attempts, problem = self._valid_answer(url, body, check)
        if problem is not None:  # recorded as invalid, never cached
            with self.tally.lock:
                self.tally.sent += 1
                self.tally.invalid += 1
            return Answer({}, cached=False, attempts=attempts, invalid=problem)
        if self.cache is not None:
            self.cache.put(key, url, self.served, body, response)
        self._count(response, cached=False)
        return Answer(response, cached=False, attempts=attempts)

    def _count(self, response: Mapping[str, Any], cached: bool) -> None:
        usage = response.get("usage") or {}
        with self.tally.lock:
            if cached:
                self.tally.cached += 1
            else:
                self.tally.sent += 1
            self.tally.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.tally.completion_tokens += int(usage.get("completion_tokens") or 0)

    def _valid_answer(
        self, url: str, body: Mapping[str, Any], check: Check
    ) -> tuple[dict[str, Any], int, str | None]:
        """POST until an answer passes ``check``: an invalid answer (a glitch of one replica,
        a server without log-probs) is asked again up to ``invalid_retries`` times; then the
        last answer, its attempts and one line saying why it is invalid (None: valid)."""
        answers = self.engine.invalid_retries + 1
        attempts = 0
        problem: str | None = None
        for asked in range(answers):
            if asked:
                self._wait(asked - 1, None)
            response, tries = self._post(url, body)
            attempts += tries
            problem = self._problem(response, check)
            if problem is None:
                return response, attempts, None
        return (
            {},
            attempts,
            _one_line(
                f"invalid answer from {url}: {problem}; still invalid after {answers} answers "
                f"(invalid_retries: {self.engine.invalid_retries}), not cached"
            ),
        )

    def _problem(self, response: Mapping[str, Any], check: Check) -> str | None:
        """Why ``response`` is not a valid answer of the accepted model (None: it is)."""
        return check(response) or model_problem(response, self.accepted_names)

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        """Back off before retry ``attempt`` (0-based), counted; Ctrl-C ends the wait."""
        with self._rng_lock:
            delay = retry_delay(
                attempt,
                retry_after,
                self.engine.retry_backoff,
                self.engine.max_backoff,
                self._rng,
            )
        with self.tally.lock:
            self.tally.retries += 1
        self._sleep(delay)
        self._check_stopping()

    def _post(self, url: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """POST with retries; the parsed JSON answer and the attempts it took."""
        httpx = self._httpx
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                reply = self._exchange("POST", url, body, reply_limit(body), self.engine.timeout)
            except httpx.TimeoutException as exc:
                problem = f"no answer from {url} within {self.engine.timeout:g} s ({_kind(exc)})"
            except Overdue:
                problem = (
                    f"no complete answer from {url} within {self.engine.timeout:g} s (the reply "
                    "was still arriving)"
                )
            except httpx.ConnectError as exc:
                problem = (
                    f"cannot connect to {url}: {_one_line(str(exc)) or _kind(exc)} "
                    "(is the server running at base_url?)"
                )
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                problem = (
                    f"{url} dropped the connection ({_kind(exc)}: {_one_line(str(exc))}; "
                    "did the server exit? its log says why)"
                )
            except httpx.HTTPError as exc:  # malformed URL and other transport errors
                raise HarnessError(f"request to {url} failed: {_kind(exc)}: {exc}") from None
            else:
                if reply.status == 200:
                    return self._json(reply, url), attempt + 1
                problem = http_error_line(reply.status, url, reply.text, self.engine.api_key_env)
                if reply.status not in RETRY_STATUSES:
                    raise HarnessError(problem)
                retry_after = parse_retry_after(reply.headers.get("retry-after"))
            if attempt >= self.engine.max_retries:
                raise HarnessError(f"{problem}; gave up after {attempt + 1} attempts")
            self._wait(attempt, retry_after)
            attempt += 1

    def _exchange(
        self, method: str, url: str, body: Mapping[str, Any] | None, limit: int, seconds: float
    ) -> Reply:
        """One request, its reply read in chunks: refused in one line past ``limit`` bytes
        (not retried: the same request would get the same answer), abandoned as
        :class:`Overdue` once ``seconds`` have passed since it was sent."""
        deadline = time.monotonic() + seconds
        timeout = self._httpx.Timeout(seconds, connect=min(seconds, OPEN_TIMEOUT))
        with self._client.stream(method, url, json=body, timeout=timeout) as reply:
            chunks: list[bytes] = []
            size = 0
            for chunk in reply.iter_bytes():
                size += len(chunk)
                if size > limit:
                    budget = f" for max_tokens={body.get('max_tokens')}" if body else ""
                    raise HarnessError(
                        f"reply from {url} exceeded {limit} bytes{budget}; not cached"
                    )
                if time.monotonic() > deadline:
                    raise Overdue
                chunks.append(chunk)
            return Reply(reply.status_code, reply.headers, b"".join(chunks))

    @staticmethod
    def _json(reply: Reply, url: str) -> dict[str, Any]:
        try:
            data = json.loads(reply.content)
        except ValueError:
            raise HarnessError(
                f"{url} answered HTTP 200 with malformed JSON: {_one_line(reply.text)[:80]!r}"
            ) from None
        if not isinstance(data, dict):
            raise HarnessError(f"{url} answered with JSON that is not an object: {_snippet(data)}")
        return data

    def _model_listing(self) -> list[dict[str, Any]]:
        """The entries ``GET /models`` lists (also the first check that base_url answers).
        A dry run asks too: cached answers are keyed by the model served."""
        url = self._url("models")
        httpx = self._httpx
        why = "; a dry run asks it which model it serves, since answers are cached per model"
        why = why if self.dry_run else ""
        try:
            reply = self._exchange(
                "GET", url, None, LISTING_LIMIT, min(self.engine.timeout, OPEN_TIMEOUT)
            )
        except httpx.ConnectError as exc:
            raise HarnessError(
                f"cannot connect to {url}: {_one_line(str(exc)) or _kind(exc)} (is the server "
                f"running at base_url?){why}"
            ) from None
        except (httpx.TimeoutException, Overdue):
            seconds = min(self.engine.timeout, OPEN_TIMEOUT)
            raise HarnessError(f"no answer from {url} within {seconds:g} s{why}") from None
        except httpx.HTTPError as exc:
            raise HarnessError(f"request to {url} failed: {_kind(exc)}: {exc}") from None
        if reply.status != 200:
            raise HarnessError(
                http_error_line(reply.status, url, reply.text, self.engine.api_key_env)
            )
        data = self._json(reply, url)
        listed = data.get("data")
        if not isinstance(listed, list):
            raise HarnessError(f"{url} is not an OpenAI-compatible model list: {_snippet(data)}")
        return [m for m in listed if isinstance(m, dict)]


def load_tokenizer(name: str) -> Any:
    """The local tokenizer for rendering and counting: an embedded model's (read from its GGUF
    file), a ``.gguf`` file's, or ``AutoTokenizer`` for a folder or hub id."""
    from harness.models import loading

    loading.require_llm_stack("rendering prompts for an HTTP backend")
    from transformers import AutoTokenizer

    if name == loading.TINY_RANDOM:
        return loading.tiny_tokenizer()
    if name in loading.EMBEDDED_MODELS:
        path = loading.embedded_gguf_path(name)
        converted = loading.converted_gguf_dir(path, loading.model_cache_root())
        if (converted / loading.CONVERSION_META).is_file():
            return AutoTokenizer.from_pretrained(str(converted))
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        raise HarnessError(
            f"cannot load tokenizer {name!r} to render prompts ({_kind(exc)}); set the "
            "tokenizer param to a local folder or an embedded model"
        ) from None


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
