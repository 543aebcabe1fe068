"""CapCal on FIRST: the calibrated score equals P(d|x) - alpha (P(d|x_empty) - 1/|C|) computed
from separate uncached forward passes; alpha = 0 is plain FIRST."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

import torch

from harness.backends.transformers_backend import TransformersBackend
from harness.errors import HarnessError
from harness.models.loading import LoadedModel
from harness.rerankers.base import RunContext
from harness.rerankers.methods.first import PRIME, CapCalFirstReranker
from harness.rerankers.params import CapCalParams
from harness.rerankers.prompts.listwise import (
    candidate_line_text,
    identifiers,
    prompt_token_ids,
)
from harness.rerankers.prompts.templates import choose_templates
from harness.rerankers.registry import check_preset, load_preset, resolve_preset
from tests.test_first import make_first, passages, random_orders, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def label_probabilities(loaded: LoadedModel, cset, texts: Sequence[str]) -> np.ndarray:
    """Identifier probabilities, renormalised over the labels, from one uncached pass."""
    template = choose_templates("numbered").for_query(cset.query)
    labels = identifiers("alpha", len(texts))
    prompt = template.prompt(loaded.tokenizer, cset.query, texts, labels, prime=PRIME)
    ids = prompt_token_ids(loaded.tokenizer, prompt.text)
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    chosen = logits[[loaded.tokenizer.convert_tokens_to_ids(label) for label in labels]].numpy()
    p = np.exp(chosen - chosen.max())
    return p / p.sum()


def make_capcal(loaded: LoadedModel, **params: object) -> CapCalFirstReranker:
    return CapCalFirstReranker(
        "first-capcal", RunContext(), TransformersBackend(loaded), CapCalParams(**params)
    )


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_calibrated_scores_match_the_formula(alpha: float) -> None:
    loaded = tiny()
    cset = passages(6)
    reranker = make_capcal(loaded, alpha=alpha)
    orders = random_orders(6, 3)
    outputs = reranker.rerank(cset, orders)
    prior = label_probabilities(loaded, cset, ["N/A"] * 6)
    for order, output in zip(orders, outputs, strict=True):
        texts = [candidate_line_text(cset.candidates[i], None)[0] for i in order]
        scores = label_probabilities(loaded, cset, texts) - alpha * (prior - 1 / 6)
        doc_ids = [cset.candidates[i].doc_id for i in order]
        expected = sorted(range(6), key=lambda k: (-scores[k], doc_ids[k]))
        assert list(output.ranking) == [doc_ids[k] for k in expected]
    # x_empty is the same for every order of the query: one extra pass for the whole call,
    # counted in the cost of the call's first output (one window pass per order besides)
    assert [o.facts.forward_passes for o in outputs] == [2, 1, 1]
    assert outputs[0].facts.extra["calibration_forward_passes"] == 1
    assert "calibration_forward_passes" not in outputs[1].facts.extra
    again = reranker.rerank(cset, orders[:1])[0]
    assert "calibration_forward_passes" not in again.facts.extra  # cached for the query
    assert again.facts.forward_passes == 1


def test_every_pass_is_counted_in_the_run_cost(tmp_path) -> None:
    """The run's forward passes per order count the content-free pass: with 3 random
    orders + the reference (4 orders) and one window per order, a query costs 4 window passes
    and 1 calibration pass, 5 / 4 = 1.25 per order; its prompt and generated tokens count
    the calibration prompt too. (Before, the summary said 1.00 and left the pass out.)"""
    from harness.config import RunConfig
    from harness.data.model import TextQuery
    from harness.metrics.registry import FORWARD_PASSES
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.params import FirstParams
    from harness.runner import execute_run, prepare_run
    from tests.conftest import write_rankgpt_folder

    loaded = tiny()
    data = write_rankgpt_folder(tmp_path / "data", queries=2, candidates=6)

    def run(out: str, build):
        config = RunConfig(
            reranker="first-capcal", dataset=str(data), perms=3, out=str(tmp_path / out)
        ).validate()
        return execute_run(prepare_run(config), reranker_factory=lambda _, context: build(context))

    results = run(
        "capcal",
        lambda context: CapCalFirstReranker(
            "first-capcal", context, TransformersBackend(loaded), CapCalParams()
        ),
    )
    assert results.vector(FORWARD_PASSES) == {"q0": 1.25, "q1": 1.25}
    assert results.summary_value(FORWARD_PASSES) == pytest.approx(1.25)
    # the same orders' windows without calibration (plain FIRST), then one content-free
    # prompt per query on top
    plain = run(
        "first",
        lambda context: FirstReranker("first", context, TransformersBackend(loaded), FirstParams()),
    )
    assert plain.summary_value(FORWARD_PASSES) == 1.0
    template = choose_templates("numbered")
    empty = [
        len(
            prompt_token_ids(
                loaded.tokenizer,
                template.for_query(query)
                .prompt(loaded.tokenizer, query, ["N/A"] * 6, identifiers("alpha", 6), prime=PRIME)
                .text,
            )
        )
        for query in (TextQuery("query number 0"), TextQuery("query number 1"))
    ]
    assert results.counts["prompt_tokens"] == plain.counts["prompt_tokens"] + sum(empty)
    assert results.counts["generated_tokens"] == plain.counts["generated_tokens"] + 2


def test_a_remote_calibration_request_is_counted_with_the_windows() -> None:
    """CapCal's content-free request is added to the windows' requests, in memory and in the
    stored facts the run summary reads."""
    from harness.backends.base import NextTokenScores
    from harness.rerankers.base import CallFacts, RerankOutput
    from harness.rerankers.methods.first import _CalibrationCost
    from harness.usage import HttpUsage, stored_usage

    cost = _CalibrationCost()
    read = NextTokenScores(
        logprobs=np.zeros((1, 2)),
        mass=(1.0,),
        top_is_chosen=(True,),
        generated_tokens=(1,),
        missing=(0,),
        calls=({"requests": 1, "cached": 0, "prompt_tokens": 7},),
    )
    cost.add(read, prompt_tokens=7)
    facts = CallFacts(
        latency_ms=1.0,
        call_latency_ms=1.0,
        prompt_tokens=30,
        generated_tokens=1,
        forward_passes=1,
        extra={"window_details": [{"http": {"requests": 1}}]},
        http=HttpUsage(requests=1),
    )
    charged = cost.charged_to([RerankOutput(("a", "b"), facts), RerankOutput(("b", "a"), facts)])
    first = charged[0].facts
    assert (first.forward_passes, first.prompt_tokens, first.generated_tokens) == (2, 37, 2)
    assert first.http == HttpUsage(requests=2, prompt_tokens=7)
    assert stored_usage(first.to_dict()) == first.usage
    assert charged[1].facts == facts


def test_alpha_zero_is_plain_first_and_the_calibration_can_change_the_order() -> None:
    loaded = tiny()
    cset = passages(8)
    orders = random_orders(8, 4, seed=1)
    plain = [o.ranking for o in make_first(loaded).rerank(cset, orders)]
    zero = [o.ranking for o in make_capcal(loaded, alpha=0.0).rerank(cset, orders)]
    strong = [o.ranking for o in make_capcal(loaded, alpha=5.0).rerank(cset, orders)]
    assert zero == plain
    assert strong != plain


def test_preset_checks_and_bad_params_fail_in_one_line(tmp_path) -> None:
    check_preset(resolve_preset("first-capcal"))
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nadapter: first-capcal\nparams: {alpha: .inf}\n", "utf-8")
    with pytest.raises(HarnessError, match="alpha must be finite"):
        check_preset(load_preset(path))


def test_an_invalid_content_free_answer_makes_every_order_of_the_call_invalid() -> None:
    """The content-free pass calibrates every window of the query: a server's answer that
    stayed invalid there (simulated: the backend's call record says so) leaves no window
    calibrated, so each order of the call is invalid, and the prior is asked again next call."""
    import dataclasses

    loaded = tiny()
    reranker = make_capcal(loaded)
    original = reranker.backend.next_token_logprobs
    calibrations = []

    def invalid_content_free(batch, ids):
        read = original(batch, ids)
        text = loaded.tokenizer.decode(list(batch.rows[0]))
        if "N/A" not in text:
            return read
        calibrations.append(text)
        calls = ({"invalid": "invalid answer from test: no top_logprobs"},)
        return dataclasses.replace(read, calls=calls)

    reranker.backend.next_token_logprobs = invalid_content_free
    for _ in range(2):
        outputs = reranker.rerank(passages(6), random_orders(6, 3))
        assert [o.facts.extra.get("invalid_answers") for o in outputs] == [1, 1, 1]
        assert outputs[2].facts.extra["invalid_answer"].endswith("no top_logprobs")
    assert len(calibrations) == 2  # not kept: the second call asked again
