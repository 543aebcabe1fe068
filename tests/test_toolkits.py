"""The toolkit adapters (docs/toolkits.md): each toolkit's own reranker receives the order the
harness shows, and the run records the toolkit's name, version and settings.

The order-revealing tests give each toolkit a model whose answer depends on the position a
candidate is shown at and nothing else (a fake chat server, a fake scorer, a fake comparison:
each named as such), then check every sample's ranking against that sample's shown order. The
real paths run too: rerankers' TransformerRanker on a tiny cross-encoder built from a config,
llm-rankers' setwise on the embedded SmolLM2, rank-llm against the real llama.cpp server
(tests/test_openai_llama_server.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.report.load import load_runs
from harness.report.markdown import table_lines
from harness.report.tables import provenance_tables
from harness.results.store import SAMPLES_FILE
from harness.runner import execute_run, prepare_run
from tests.conftest import write_rankgpt_folder
from tests.fake_openai_server import FAKE_MODEL, FakeServer

CANDIDATES = 6


def _run(tmp_path: Path, adapter: str, params: dict[str, Any], *, queries: int = 2, **design: Any):
    data = write_rankgpt_folder(tmp_path / "data", queries=queries, candidates=CANDIDATES)
    preset = tmp_path / f"{adapter}.yaml"
    body = {"name": f"{adapter}-test", "adapter": adapter, "params": params}
    preset.write_text(yaml.safe_dump(body), encoding="utf-8")
    run_dir = tmp_path / "run"
    config = RunConfig(
        reranker=str(preset), dataset=str(data), queries=queries, out=str(run_dir),
        **{"perms": 3, **design},
    ).validate()  # fmt: skip
    results = execute_run(prepare_run(config))
    lines = (run_dir / SAMPLES_FILE).read_text(encoding="utf-8").splitlines()
    return results, [json.loads(line) for line in lines], run_dir


def _shown_ids(sample: dict[str, Any]) -> list[str]:
    """The candidate ids in the order shown (write_rankgpt_folder's ids: rank = index + 1)."""
    return [f"{sample['query_id']}-d{i + 1:02d}" for i in sample["shown"]]


def _orders_differ(samples: list[dict[str, Any]]) -> None:
    """The check below is only worth something if the shown orders differ."""
    for query in {s["query_id"] for s in samples}:
        shown = {tuple(s["shown"]) for s in samples if s["query_id"] == query}
        assert len(shown) >= 3


# --- rank-llm: its SafeOpenai against a fake chat server that answers by position ---------


def _passages(body: dict[str, Any]) -> list[str]:
    """The passages a RankGPT chat prompt lists, in its order ("[k] text" user turns)."""
    turns = [m["content"] for m in body["messages"] if m["role"] == "user"]
    return [t.split("] ", 1)[1] for t in turns if re.match(r"\[\d+\] ", t)]


def _reverse_of_shown(body: dict[str, Any]) -> dict[str, Any]:
    """A FAKE chat model: ranks the passages it was shown last-to-first ("[n] > ... > [1]")."""
    text = " > ".join(f"[{k}]" for k in range(len(_passages(body)), 0, -1))
    return {
        "id": "fake",
        "object": "chat.completion",
        "created": 0,
        "model": FAKE_MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }


def test_rank_llm_sees_the_shown_order_and_the_report_names_it(tmp_path: Path, smollm2_folder):
    pytest.importorskip("rank_llm")
    with FakeServer(answer=_reverse_of_shown) as server:
        params = {
            "model": FAKE_MODEL,
            "base_url": server.base_url,
            "tokenizer": smollm2_folder,
            "options": {"window_size": 20, "stride": 10},
        }
        results, samples, run_dir = _run(tmp_path, "rank-llm", params)
        bodies = list(server.bodies)
    _orders_differ(samples)
    assert len(bodies) == len(samples)  # one window of 6 per shown order
    for sample in samples:
        assert sample["ranking"] == _shown_ids(sample)[::-1]
        assert sample["facts"]["extra"]["toolkit_calls"] == 1
    # the prompts listed the passages in the shown order (rank-llm re-sorted nothing)
    shown_texts = [
        [f"doc {i + 1} of query {s['query_id'][1:]}" for i in s["shown"]] for s in samples
    ]
    sent = [tuple(_passages(body)) for body in bodies]
    assert sorted(sent) == sorted(map(tuple, shown_texts))
    identity = results.reranker.identity
    assert identity["toolkit"] == "rank-llm"
    assert identity["toolkit_version"] == importlib.metadata.version("rank-llm")
    assert identity["toolkit_settings"]["window_size"] == 20
    (table,) = provenance_tables(load_runs([run_dir]))  # the report's provenance table
    markdown = "\n".join(table_lines(table))
    assert f"rank-llm {identity['toolkit_version']}; settings: model={FAKE_MODEL}" in markdown


def test_rank_llm_refuses_to_shuffle(tmp_path: Path):
    pytest.importorskip("rank_llm")
    from harness.rerankers.base import RunContext
    from harness.rerankers.toolkits.rank_llm import RankLLMReranker

    with pytest.raises(HarnessError, match="shuffle_candidates"):
        RankLLMReranker(
            "x", RunContext(), model="m", base_url="http://127.0.0.1:9/v1",
            options={"shuffle_candidates": True},
        )  # fmt: skip
    assert "vllm" not in sys.modules or sys.modules["vllm"].__spec__ is not None


# --- rerankers (AnswerDotAI): a fake scorer by position, and a real tiny cross-encoder ----


def test_rerankers_sees_the_shown_order(tmp_path: Path, monkeypatch):
    rerankers_models = pytest.importorskip("rerankers.models")
    from rerankers.models.ranker import BaseRanker
    from rerankers.results import RankedResults, Result
    from rerankers.utils import prep_docs

    class LaterShownIsBetter(BaseRanker):
        """A FAKE ranker: scores each doc by the position it was shown at, nothing else."""

        def __init__(self, model_name_or_path: str, verbose: int = 0, **kwargs: Any) -> None:
            pass

        def score(self, query: str, doc: str) -> float:
            raise NotImplementedError

        def rank(self, query, docs, doc_ids=None, metadata=None):
            docs = prep_docs(docs, doc_ids, metadata)
            scored = sorted(enumerate(docs), key=lambda p: p[0], reverse=True)
            results = [
                Result(document=d, score=float(i), rank=r + 1) for r, (i, d) in enumerate(scored)
            ]
            return RankedResults(results=results, query=query, has_scores=True)

    rankers = rerankers_models.AVAILABLE_RANKERS
    monkeypatch.setitem(rankers, "LaterShownIsBetter", LaterShownIsBetter)
    results, samples, _ = _run(
        tmp_path, "rerankers", {"model": "position-fake", "model_type": "LaterShownIsBetter"}
    )
    _orders_differ(samples)
    for sample in samples:
        assert sample["ranking"] == _shown_ids(sample)[::-1]
    assert results.reranker.identity["toolkit_class"] == "LaterShownIsBetter"


def test_rerankers_cross_encoder_runs_for_real_and_is_order_invariant(tmp_path: Path):
    pytest.importorskip("rerankers")
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path / "tiny-cross-encoder"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "doc", "of", "query", "number"]
    vocab += [str(i) for i in range(20)]
    folder.mkdir()
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=1,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    params = {"model": str(folder), "model_type": "cross-encoder", "options": {"batch_size": 4}}
    results, samples, _ = _run(tmp_path, "rerankers", params, queries=1)
    assert results.reranker.identity["toolkit_class"] == "TransformerRanker"
    first = samples[0]["scores"]
    for sample in samples:  # pointwise: each doc's score whatever its position or batch
        assert sample["scores"].keys() == first.keys()
        for doc, value in sample["scores"].items():
            assert value == pytest.approx(first[doc], abs=1e-5)
        assert sorted(sample["ranking"]) == sorted(_shown_ids(sample))


# --- llm-rankers: setwise with a fake "first passage wins" comparison, and for real -------


def test_llm_rankers_setwise_sees_the_shown_order(tmp_path: Path, monkeypatch):
    setwise = pytest.importorskip("llmrankers.setwise")
    from harness.models.loading import build_tiny_llama

    tiny = build_tiny_llama()
    folder = tmp_path / "tiny-llama"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    # A FAKE comparison: the passage shown first ("A") always wins. Bubble sort then keeps
    # the list exactly as the adapter handed it over: the ranking is the shown order.
    monkeypatch.setattr(setwise.SetwiseLlmRanker, "compare", lambda self, query, docs: "A")
    params = {
        "method": "setwise",
        "model": str(folder),
        "options": {"method": "bubblesort", "num_child": 2, "k": CANDIDATES},
    }
    results, samples, _ = _run(tmp_path, "llm-rankers", params)
    _orders_differ(samples)
    for sample in samples:
        assert sample["ranking"] == _shown_ids(sample)
    assert results.reranker.identity["toolkit_settings"]["options"]["method"] == "bubblesort"


@pytest.mark.slow
def test_llm_rankers_setwise_runs_for_real_on_smollm2(tmp_path: Path, smollm2_folder):
    pytest.importorskip("llmrankers")
    params = {"method": "setwise", "model": smollm2_folder, "options": {"num_child": 3, "k": 2}}
    results, samples, _ = _run(tmp_path, "llm-rankers", params, queries=1, strategy="identity")
    for sample in samples:
        assert sorted(sample["ranking"]) == sorted(_shown_ids(sample))
        assert sample["facts"]["extra"]["toolkit_calls"] >= 2  # one per heap comparison
        assert sample["facts"]["extra"]["prompt_tokens"] > 0
    assert results.reranker.identity["model_revision"].startswith("folder:")


# --- rankify: not installable beside the harness; its classes stood in for -------------


def _stand_in_rankify(monkeypatch) -> None:
    """FAKE rankify modules with rankify 0.1.4's class names and signatures, whose only
    reranker returns the contexts last-shown-first."""

    class Question:
        def __init__(self, question: str) -> None:
            self.question = question

    class Answer:
        def __init__(self, answers: list | None = None) -> None:
            self.answers = answers or []

    class Context:
        def __init__(self, score=None, has_answer=None, id=None, title=None, text=None) -> None:
            self.score, self.has_answer, self.id, self.title, self.text = (
                score, has_answer, id, title, text,
            )  # fmt: skip

    class Document:
        def __init__(self, question, answers, contexts=None, id=None) -> None:
            self.question, self.answers, self.contexts, self.id = question, answers, contexts, id
            self.reorder_contexts = None

    class Reranking:
        def __init__(self, method=None, model_name=None, api_key=None, **kwargs) -> None:
            self.method, self.model = method, model_name

        def rank(self, documents):
            for document in documents:
                document.reorder_contexts = list(reversed(document.contexts))
            return documents

    modules = {
        "rankify": types.ModuleType("rankify"),
        "rankify.models": types.ModuleType("rankify.models"),
        "rankify.models.reranking": types.ModuleType("rankify.models.reranking"),
        "rankify.dataset": types.ModuleType("rankify.dataset"),
        "rankify.dataset.dataset": types.ModuleType("rankify.dataset.dataset"),
    }
    modules["rankify.models.reranking"].Reranking = Reranking
    for cls in (Question, Answer, Context, Document):
        setattr(modules["rankify.dataset.dataset"], cls.__name__, cls)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_rankify_wiring_against_stand_ins(tmp_path: Path, monkeypatch):
    if importlib.util.find_spec("rankify") is not None:
        pytest.skip("rankify is installed: its real classes are not stood in for")
    _stand_in_rankify(monkeypatch)
    results, samples, _ = _run(tmp_path, "rankify", {"method": "rankgpt", "model": "any"})
    _orders_differ(samples)
    for sample in samples:
        assert sample["ranking"] == _shown_ids(sample)[::-1]
    assert results.reranker.identity["toolkit"] == "rankify"


def test_a_missing_toolkit_is_one_line_with_how_to_install(tmp_path: Path):
    if importlib.util.find_spec("rankify") is not None:
        pytest.skip("rankify is installed")
    with pytest.raises(HarnessError) as caught:
        _run(tmp_path, "rankify", {"method": "rankgpt", "model": "any"}, queries=1, perms=1)
    message = str(caught.value)
    assert "\n" not in message and "transformers==4.45.2" in message


def test_model_flag_and_device_reach_toolkit_presets(tmp_path: Path):
    from harness.rerankers.model_override import with_model
    from harness.rerankers.registry import device_used, resolve_preset

    setwise = resolve_preset("llm-rankers-setwise")
    assert with_model(setwise, str(tmp_path)).params["model"] == str(tmp_path)
    with pytest.raises(HarnessError, match="takes no revision"):
        with_model(setwise, "org/name@abc123")
    assert device_used(setwise, "cuda:0") == "cuda:0"
    assert device_used(resolve_preset("rank-llm-openai"), "cuda:0") == "remote"
