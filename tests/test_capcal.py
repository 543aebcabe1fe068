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
from harness.rerankers.first import PRIME, CapCalFirstReranker
from harness.rerankers.listwise_prompts import (
    candidate_line_text,
    identifiers,
    prompt_token_ids,
)
from harness.rerankers.params import CapCalParams
from harness.rerankers.registry import check_preset, load_preset, resolve_preset
from harness.rerankers.templates import choose_templates
from tests.test_first import make_first, one_torch_thread, passages, random_orders, tiny

__all__ = ["one_torch_thread"]  # the module fixture: one torch thread


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
        assert output.facts.forward_passes == 1
    # x_empty is the same for every order of the query: one extra pass for the whole call
    assert outputs[0].facts.extra["calibration_forward_passes"] == 1
    assert "calibration_forward_passes" not in outputs[1].facts.extra
    again = reranker.rerank(cset, orders[:1])[0]
    assert "calibration_forward_passes" not in again.facts.extra  # cached for the query


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
