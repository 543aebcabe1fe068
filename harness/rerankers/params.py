"""Typed reranker params, built from a preset's flat ``params`` mapping.

A preset keeps one flat mapping (``model``, ``window_size``, ``temperature`` …); each concern
owns its keys in one frozen dataclass: the model (:class:`~harness.backends.params.ModelParams`),
the backend's engine (``TransformersParams``, ``VllmParams``) and the method (below).
:func:`split_params` hands every key to the dataclass that declares it and reports an unknown
key or a wrong type in one line naming the preset file and the key. Value checks live in
``__post_init__``, so a bad value also fails before any model loads.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.rerankers.prompts.listwise import identifiers
from harness.rerankers.windows import DEFAULT_STRIDE, DEFAULT_WINDOW, validate_window

ATTENTION_ROUTES = (None, "segments", "dense")  # MarkerParams.attention; None: the method's own

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _check_history(max_history: int | None) -> None:
    if max_history is not None and max_history < 0:
        raise HarnessError(f"max_history must be >= 0, got {max_history}")


def check_template(name_or_path: str | None, kind: str) -> None:
    """The chosen prompt template exists, is valid, is of the reranker's kind and its text
    normalisers are installed (checked before any model loads)."""
    if name_or_path is None:
        return
    from harness.rerankers.prompts.templates import check_kind, resolve_template

    loaded = resolve_template(name_or_path)
    check_kind(loaded, kind)
    normalization = getattr(loaded.template, "normalize", None)
    if normalization is not None:
        normalization.require(f"prompt template {loaded.template.name!r}")


@dataclass(frozen=True)
class ListwiseParams:
    """Sliding window and prompt of the numbered listwise methods: ``window_size``,
    ``stride``, ``max_candidate_words`` (candidate text cut to this many words; unset keeps
    it whole), ``max_history`` (most recent history items kept, recommendation),
    ``prompt_template`` (a ``numbered`` template by name or path; unset: the defaults)."""

    template_kind: ClassVar[str] = "numbered"  # the kind of template the method renders
    window_size: int = DEFAULT_WINDOW
    stride: int = DEFAULT_STRIDE
    max_candidate_words: int | None = None
    max_history: int | None = None
    prompt_template: str | None = None

    def __post_init__(self) -> None:
        validate_window(self.window_size, self.stride)
        if self.max_candidate_words is not None and self.max_candidate_words < 1:
            raise HarnessError("max_candidate_words must be >= 1")
        _check_history(self.max_history)
        check_template(self.prompt_template, self.template_kind)


@dataclass(frozen=True)
class FirstParams(ListwiseParams):
    """FIRST: ``identifiers`` (``alpha``: A-Z, the default; ``numeric``: one token per number
    only where the tokenizer has one, usually up to 9)."""

    identifiers: str = "alpha"

    def __post_init__(self) -> None:
        super().__post_init__()
        identifiers(self.identifiers, self.window_size)  # the style exists and covers a window


@dataclass(frozen=True)
class RankGPTParams(ListwiseParams):
    """RankGPT-style generation: ``temperature`` (0 = greedy, the default), ``max_new_tokens``
    (unset: a complete answer for the window plus slack), ``ignore_eos`` (always generate the
    full budget, for benchmarks that time a complete answer), ``window_memo`` (greedy only:
    a window prompt already answered in the call reuses that answer instead of being
    generated again; the rankings are the same, the work less)."""

    temperature: float = 0.0
    max_new_tokens: int | None = None
    ignore_eos: bool = False
    window_memo: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature >= 0.0:
            raise HarnessError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise HarnessError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


LLMRANK_MAX_TOKENS = 512  # LLMRank's Rank.yaml max_tokens


@dataclass(frozen=True)
class LLMRankParams(RankGPTParams):
    """LLMRank: RankGPT's generation settings with a ``titles`` template (unset: LLMRank's
    Games prompt); ``max_new_tokens`` unset is 512, LLMRank's ``max_tokens`` (its prompt asks
    the model to think step by step before the titles). ``max_candidate_words`` is refused:
    LLMRank shows whole titles, and the answer is matched back to them."""

    template_kind: ClassVar[str] = "titles"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_candidate_words is not None:
            raise HarnessError(
                "max_candidate_words does not apply to llmrank: it shows whole titles and "
                "matches the answer back to them; remove it"
            )


@dataclass(frozen=True)
class PointwiseParams:
    """Pointwise: ``max_history``, ``candidates_per_forward`` (suffixes per forward pass),
    ``prompt_template`` (a ``pointwise`` template by name or path; unset: the defaults)."""

    max_history: int | None = None
    candidates_per_forward: int = 32
    prompt_template: str | None = None

    def __post_init__(self) -> None:
        _check_history(self.max_history)
        check_template(self.prompt_template, "pointwise")
        if self.candidates_per_forward < 1:
            raise HarnessError("candidates_per_forward must be >= 1")


@dataclass(frozen=True)
class MarkerParams:
    """InvariRank and lft: ``max_history``, ``max_candidate_tokens`` (content tokens kept per
    candidate; longer ones are truncated and counted in the call facts; unset: a set that
    does not fit the model's positions is an error), ``attention`` (InvariRank: ``segments``,
    the default, runs each candidate segment as its own row on the span's cache, computing
    only the attention the mask allows; ``dense`` runs the whole prompt under the 4-D mask,
    the reference it is tested against; lft is causal and takes only ``dense``),
    ``prompt_template`` (a ``marker`` template by name or path; unset: the defaults)."""

    max_history: int | None = None
    max_candidate_tokens: int | None = None
    attention: str | None = None
    prompt_template: str | None = None

    def __post_init__(self) -> None:
        _check_history(self.max_history)
        check_template(self.prompt_template, "marker")
        if self.attention not in ATTENTION_ROUTES:
            routes = ", ".join(r for r in ATTENTION_ROUTES if r)
            raise HarnessError(f"attention must be one of {routes}, got {self.attention!r}")
        if self.max_candidate_tokens is not None and self.max_candidate_tokens < 1:
            raise HarnessError(
                f"max_candidate_tokens must be >= 1, got {self.max_candidate_tokens}"
            )


def split_params(where: str, params: Mapping[str, Any], classes: Sequence[type]) -> tuple[Any, ...]:
    """One instance of each dataclass in ``classes`` from the flat ``params`` mapping.

    ``where`` prefixes every error (the preset file and name). Unknown keys, wrong types and
    bad values are each one line.
    """
    owner: dict[str, type] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            owner.setdefault(f.name, cls)
    unknown = sorted(set(params) - set(owner))
    if unknown:
        raise HarnessError(
            f"{where}: unknown param {unknown[0]!r}; known params: {', '.join(sorted(owner))}"
        )
    built = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in params and owner[f.name] is cls:
                kwargs[f.name] = _checked(where, f.name, params[f.name], hints[f.name])
        try:
            built.append(cls(**kwargs))
        except HarnessError as exc:
            raise HarnessError(f"{where}: {exc}") from exc
    return tuple(built)


def _checked(where: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint`` (``T`` or ``T | None``, T in str/int/float/bool);
    integers are accepted for floats, booleans never for numbers."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return value
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool) and isinstance(value, kind):
            return value
    wanted = " or ".join(_TYPE_NAMES.get(k, "null") for k in allowed if k is not type(None))
    if type(None) in allowed:
        wanted += " (or null)"
    raise HarnessError(
        f"{where}: param {key!r} must be {wanted}, got {value!r} ({type(value).__name__})"
    )


@dataclass(frozen=True)
class CapCalParams(FirstParams):
    """FIRST with content-free calibration (CapCal): ``alpha`` (the weight of the empty-passage
    prior, 1.0 by default) and ``placeholder`` (the text every passage body is replaced by in
    the content-free prompt)."""

    alpha: float = 1.0
    placeholder: str = "N/A"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.alpha):
            raise HarnessError(f"alpha must be finite, got {self.alpha!r}")
        if not self.placeholder.strip():
            raise HarnessError("placeholder must not be empty")
