"""Text normalisation that a prompt template asks for, at the points where a published
implementation applies it.

castorini/rank_llm runs ``ftfy.fix_text`` over each passage (after stripping it, before
cutting it to its word limit) and again over the whole rendered prompt (chat template
applied). MS MARCO passages carry mojibake (``â€™``), curly quotes and HTML entities, so this
changes most DL19 windows: a template that reproduces rank_llm's prompts must do the same, or
the model reads other tokens. The whole-prompt pass is not the per-passage pass again: ftfy
stops unescaping HTML entities from the first line holding a ``<``, which a chat template's
first line does.

A template states it as ``normalize: {candidates: ftfy, prompt: ftfy}``; the default is
``none`` at both points, and the setting is part of the template's hash.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from harness.errors import HarnessError, MissingExtraError

NORMALIZERS: tuple[str, ...] = ("none", "ftfy")
POINTS: tuple[str, ...] = ("candidates", "prompt")


@dataclass(frozen=True)
class Normalization:
    """What to normalise: ``candidates`` (each candidate's text, before it is cut to
    ``max_candidate_words``) and ``prompt`` (the whole rendered prompt, before any priming of
    the answer); each ``none`` or ``ftfy``."""

    candidates: str = "none"
    prompt: str = "none"

    def __post_init__(self) -> None:
        for point in POINTS:
            how = getattr(self, point)
            if how not in NORMALIZERS:
                raise HarnessError(
                    f"normalize.{point} must be one of {', '.join(NORMALIZERS)}, got {how!r}"
                )

    @property
    def active(self) -> bool:
        return any(getattr(self, point) != "none" for point in POINTS)

    def require(self, purpose: str) -> None:
        """Fail in one line, before any model loads, when a normaliser is not installed."""
        uses = {getattr(self, point) for point in POINTS}
        if "ftfy" in uses and importlib.util.find_spec("ftfy") is None:
            raise MissingExtraError("ftfy", "llm", purpose)


def normalize_text(text: str, how: str) -> str:
    """``text`` through the normaliser ``how`` (``none`` returns it unchanged)."""
    if how == "none":
        return text
    if how == "ftfy":
        from ftfy import fix_text

        return fix_text(text)
    raise HarnessError(f"unknown text normaliser {how!r}; known: {', '.join(NORMALIZERS)}")
