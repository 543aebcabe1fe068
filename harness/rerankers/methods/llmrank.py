"""LLMRank (Hou et al., ECIR 2024, RUCAIBox/LLMRank): rank a user's candidates by asking for titles.

The prompt lists the user's history and the candidates (template kind ``titles``, by default
LLMRank's own Games prompt, :mod:`harness.rerankers.prompts.titles`); the model generates a ranked
list of
titles, which :mod:`title_parser` matches back to the candidates as LLMRank does. Generation
is RankGPT's (same backends, decoding, sliding windows and bookkeeping); only the prompt, the
answer budget and the parser differ. LLMRank ranks a whole list (20) in one prompt: with the
presets' window of 20 that is one window.

What this does not do: LLMRank re-asks the API, up to twice, when the ground-truth item is not
among the matched titles; the harness never shows a reranker the judgments (and a greedy
model would answer the same again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.data.model import CandidateSet
from harness.rerankers.methods.listwise import WindowPrompt, WindowResult
from harness.rerankers.methods.rankgpt import RankGPTReranker, generated_window_result
from harness.rerankers.params import LLMRANK_MAX_TOKENS, LLMRankParams
from harness.rerankers.prompts.title_parser import parse_titles


def llmrank_result(
    text: str,
    window: WindowPrompt,
    *,
    prompt_tokens: int,
    generated_tokens: int,
    stopped: bool,
    call: Mapping[str, Any] | None = None,
) -> WindowResult:
    """Parse one window's answer (titles) into a window result; ``named``: the candidates
    LLMRank would score, the rest follow by doc id."""
    parsed = parse_titles(text, window.texts, window.doc_ids)
    return generated_window_result(
        text,
        parsed,
        prompt_tokens=prompt_tokens,
        generated_tokens=generated_tokens,
        stopped=stopped,
        call=call,
        named=parsed.named,
    )


class LLMRankReranker(RankGPTReranker):
    """Generates ranked titles per window and matches them back (LLMRank's rule).

    Params: :class:`~harness.rerankers.params.LLMRankParams`. Recommendation only: a text
    query stops the run at its start (the template lists a user's history).
    """

    method = "llmrank"
    params_type = LLMRankParams
    params: LLMRankParams

    @property
    def max_new_tokens(self) -> int:
        return self.params.max_new_tokens or LLMRANK_MAX_TOKENS

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "max_new_tokens": self.max_new_tokens,
            "answer": "titles, matched back by LLMRank's rule",
        }

    def check_data(self, candidate_set: CandidateSet) -> None:
        super().check_data(candidate_set)
        self.templates.for_query(candidate_set.query)  # one line for a text query

    def window_budget(self, windows: Sequence[WindowPrompt]) -> int:
        # One budget for every order: a budget from the window's titles would differ between
        # the windows of a call, and so with the orders that happen to share it.
        return self.max_new_tokens

    def window_result(self, window: WindowPrompt, text: str, **facts: Any) -> WindowResult:
        return llmrank_result(text, window, **facts)

    def _candidate_texts(self, candidate_set: CandidateSet, template: Any) -> tuple[list[str], int]:
        # Whole titles, spaces and all, as LLMRank shows them and matches answers against.
        return [c.title or c.text for c in candidate_set.candidates], 0
