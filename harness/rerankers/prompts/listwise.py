"""Numbered listwise prompts for generative rerankers (RankGPT-style and FIRST).

One prompt per window: a system message, then a user message made of

* ``head``: the instruction and the query (text ranking) or the user's rated history
  (recommendation) — the same for every window and every order of a candidate set, and put
  first so that a prefix KV cache (transformers) or automatic prefix caching (vLLM) can reuse
  it;
* one line per candidate, ``[label] text``, in the shown order;
* ``tail``: the number of candidates and the answer format (the query is repeated for text
  ranking, as RankGPT does, so it is close to where the answer starts).

The chat template of the model is applied where it has one; a model without one gets plain
text. FIRST primes the assistant turn with ``[`` so that the very next token is an identifier.

A template may normalise text where a published implementation does (``normalize``, see
:mod:`harness.rerankers.prompts.normalize`): each candidate's text before it is cut to its word
limit, and the whole rendered prompt before the answer is primed.

The templates are data (``templates/*.yaml``, see :mod:`harness.rerankers.prompts.templates`); a
template's :meth:`sha256` covers every string that shapes the prompt plus
``prompts.FORMAT_VERSION``; bump that when the rendering code changes.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends.base import Turns
from harness.data.model import Candidate, QueryContext, TextQuery
from harness.errors import HarnessError
from harness.rerankers.prompts.base import ContextFormat, candidate_text, template_hash
from harness.rerankers.prompts.normalize import Normalization, normalize_text

IDENTIFIER_STYLES: tuple[str, ...] = ("numeric", "alpha")
PLAIN_ANSWER = "\n\nAnswer:\n"  # ends the prompt of a model without a chat template
_BRACKETED_NUMBER = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class NumberedTemplate:
    """A listwise prompt with bracketed identifiers; see the module docstring for the parts.

    Single turn (the default): the user message is ``head + items + tail``. Multi-turn
    (RankGPT's conversation), when ``head_reply`` is set: the head is one user turn answered by
    ``head_reply``, each item a user turn answered by ``item_reply`` (field ``{label}``), and
    the tail the last user turn. ``replace_numbers`` rewrites ``[12]`` as ``(12)`` in the query
    and the candidates, as rank_llm does, so a passage cannot look like an identifier.
    """

    name: str
    system: str
    head: str  # fields: {context}, {count}
    item: str  # fields: {label}, {text}
    tail: str  # fields: {count}, {example}, {query}
    context: ContextFormat = field(default_factory=lambda: ContextFormat(query="{query}"))
    head_reply: str = ""
    item_reply: str = ""  # field: {label}
    replace_numbers: bool = False
    normalize: Normalization = field(default_factory=Normalization)

    def candidate_text(self, candidate: Candidate, max_words: int | None) -> tuple[str, bool]:
        """A candidate as its line shows it: stripped, normalised, on one line and cut to
        ``max_words`` words, in rank_llm's order (the cut counts the normalised words); returns
        the text and whether it was cut."""
        line = self.context.candidate_line(candidate).strip()
        return one_line(normalize_text(line, self.normalize.candidates), max_words)

    def render_head(
        self, query: QueryContext, max_history: int | None = None, count: int = 0
    ) -> str:
        context = self.context.render(self._query(query), max_history)
        return self.head.format(context=context, count=count)

    def render_items(self, texts: Sequence[str], labels: Sequence[str]) -> list[str]:
        return [
            self.item.format(label=lab, text=self._clean(t))
            for lab, t in zip(labels, texts, strict=True)
        ]

    def render_tail(self, query: QueryContext, labels: Sequence[str]) -> str:
        example = " > ".join(f"[{label}]" for label in labels[:2][::-1])
        text = self._clean(query.text) if isinstance(query, TextQuery) else ""
        return self.tail.format(count=len(labels), example=example, query=text)

    def prompt(
        self,
        tokenizer: Any,
        query: QueryContext,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        max_history: int | None = None,
        prime: str = "",
    ) -> ChatPrompt:
        """The window's prompt: these candidate texts under these identifiers, normalised as a
        whole (chat template included) before ``prime`` opens the answer."""
        head = self.render_head(query, max_history, len(labels))
        items = self.render_items(texts, labels)
        tail = self.render_tail(query, labels)
        if not self.head_reply:
            turns = [("system", self.system), ("user", head + "".join(items) + tail)]
        else:
            turns = [("system", self.system), ("user", head), ("assistant", self.head_reply)]
            for label, item in zip(labels, items, strict=True):
                turns += [("user", item), ("assistant", self.item_reply.format(label=label))]
            turns.append(("user", tail))
        rendered = chat_prompt(tokenizer, turns, head)
        if self.normalize.prompt != "none":
            rendered = rendered.normalized(self.normalize.prompt)
        return ChatPrompt(rendered.prefix, rendered.text + prime, rendered.turns)

    def sha256(self) -> str:
        return template_hash(self)

    def _query(self, query: QueryContext) -> QueryContext:
        return TextQuery(self._clean(query.text)) if isinstance(query, TextQuery) else query

    def _clean(self, text: str) -> str:
        return _BRACKETED_NUMBER.sub(r"(\1)", text) if self.replace_numbers else text


@dataclass(frozen=True)
class ChatPrompt:
    """A rendered prompt: ``prefix`` is the part shared by every window of the set (it ends
    after the head; empty where the chat template hides where that is), ``text`` the whole
    prompt, prefix included, with the assistant turn opened and primed where asked;
    ``turns``: the (role, content) messages it was rendered from, for a server that applies
    its own chat template (no prime: a chat request cannot open the answer)."""

    prefix: str
    text: str
    turns: Turns = ()

    def normalized(self, how: str) -> ChatPrompt:
        """Both texts (and each turn) through the normaliser ``how``; the prefix is kept only
        where it is still a prefix of the normalised text (ftfy fixes line by line, so one
        that ends a line is)."""
        text = normalize_text(self.text, how)
        prefix = normalize_text(self.prefix, how) if self.prefix else ""
        turns = tuple((role, normalize_text(content, how)) for role, content in self.turns)
        return ChatPrompt(prefix if text.startswith(prefix) else "", text, turns)


def identifiers(style: str, count: int) -> tuple[str, ...]:
    """``1 .. count`` (numeric) or ``A .. `` (alpha, at most 26)."""
    if style == "numeric":
        return tuple(str(i) for i in range(1, count + 1))
    if style == "alpha":
        if count > len(string.ascii_uppercase):
            raise HarnessError(
                f"alpha identifiers go up to 26 (A-Z); a window of {count} needs more: lower "
                "window_size or use identifiers: numeric"
            )
        return tuple(string.ascii_uppercase[:count])
    raise HarnessError(f"identifiers must be one of {', '.join(IDENTIFIER_STYLES)}, got {style!r}")


def one_line(text: str, max_words: int | None) -> tuple[str, bool]:
    """``text`` on one line (whitespace collapsed), cut to ``max_words`` words; returns the
    text and whether it was cut."""
    words = text.split()
    cut = max_words is not None and len(words) > max_words
    return " ".join(words[:max_words] if cut else words), cut


def candidate_line_text(candidate: Candidate, max_words: int | None) -> tuple[str, bool]:
    """A candidate's text (its text, else its title) on one line, cut to ``max_words``."""
    return one_line(candidate_text(candidate), max_words)


def chat_prompt(
    tokenizer: Any, turns: Sequence[tuple[str, str]], head: str, prime: str = ""
) -> ChatPrompt:
    """Render the ``(role, text)`` turns with the tokenizer's chat template (generation prompt
    added), or as plain text when it has none; append ``prime``. ``head`` marks the end of the
    part every window of a set shares.

    A template that rejects the system role gets the system text at the top of the first user
    turn.
    """
    system = [text for role, text in turns if role == "system"]
    rest = [(role, text) for role, text in turns if role != "system"]
    if getattr(tokenizer, "chat_template", None):
        try:
            text = _apply(tokenizer, list(turns))
        except Exception:  # templates that reject a system role raise their own error types
            (role, first), *others = rest
            merged = "\n\n".join([*system, first])
            text = _apply(tokenizer, [(role, merged), *others])
    else:
        text = "\n\n".join([*system, "\n\n".join(t for _, t in rest)]) + PLAIN_ANSWER
    at = text.find(head)
    prefix = text[: at + len(head)] if at >= 0 else ""
    return ChatPrompt(prefix=prefix, text=text + prime, turns=tuple(turns))


def generation_context(tokenizer: Any, prime: str = "") -> str:
    """A short rendered prompt ending where the answer starts (plus ``prime``): the context in
    which identifier tokens are checked."""
    return chat_prompt(tokenizer, [("system", "s"), ("user", "u")], "u", prime).text


def prompt_token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt: chat-template text already carries its special tokens
    (adding them again would double the BOS); plain text gets the tokenizer's usual ones."""
    plain = not getattr(tokenizer, "chat_template", None)
    return list(tokenizer.encode(text, add_special_tokens=plain))


def _apply(tokenizer: Any, turns: Sequence[tuple[str, str]]) -> str:
    messages = [{"role": role, "content": content} for role, content in turns]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise HarnessError("the tokenizer's chat template did not render to text")
    return text
