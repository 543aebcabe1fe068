"""Typed usage records (harness.usage): how they add up, and that samples stored before them
(facts holding only the old dict shapes) give the counts the harness computed then."""

from __future__ import annotations

from harness.permutations import OrderLabel
from harness.results.store import Sample
from harness.results.summary import CostCounter
from harness.usage import HttpUsage, Usage, stored_usage, total

# Stored facts in the shapes the harness at 0889472 wrote (copied from real run folders'
# samples.jsonl, fewer windows, latencies dropped).
CALL = {
    "server_model": "fake",
    "prompt_tokens": 7,
    "completion_tokens": 1,
    "cached": False,
    "attempts": 1,
    "system_fingerprint": "fp-fake",
    "logit_bias": True,
}
FACTS = [
    # FIRST over HTTP: one request per window, the second answered by the cache
    {
        "prompt_tokens": 1479,
        "generated_tokens": 2,
        "forward_passes": 2,
        "parse_status": "ok",
        "extra": {
            "windows": 2,
            "window_details": [
                {"identifier_mass": 4.7, "http": CALL},
                {"identifier_mass": 4.7, "http": {**CALL, "prompt_tokens": 9, "cached": True}},
            ],
        },
    },
    # CapCal over HTTP: a window's request and the content-free pass's
    {
        "prompt_tokens": 900,
        "generated_tokens": 2,
        "forward_passes": 2,
        "parse_status": "ok",
        "extra": {
            "window_details": [{"identifier_mass": 1.0, "http": CALL}],
            "calibration_forward_passes": 1,
            "calibration_details": [{"http": {**CALL, "prompt_tokens": 5}}],
        },
    },
    # RankGPT over chat: the server returned no usage
    {
        "prompt_tokens": 300,
        "generated_tokens": 20,
        "forward_passes": 20,
        "parse_status": "wrong_format",
        "extra": {
            "window_details": [
                {
                    "output": "[1] > [2]",
                    "stopped": True,
                    "http": {
                        "server_model": "fake",
                        "prompt_tokens": None,
                        "completion_tokens": None,
                        "cached": False,
                        "attempts": 1,
                    },
                }
            ]
        },
    },
    # a dry run's stand-in request
    {
        "prompt_tokens": 10,
        "generated_tokens": 1,
        "forward_passes": 1,
        "extra": {"window_details": [{"http": {"dry_run": True, "cached": False}}]},
    },
    # pointwise over HTTP: the set's summary on its first order (one answer invalid), none on
    # the orders that reuse its scores
    {
        "prompt_tokens": 1089,
        "generated_tokens": 0,
        "forward_passes": 1,
        "parse_status": "not_applicable",
        "extra": {
            "scores_reused": False,
            "http": {
                "requests": 12,
                "cached": 3,
                "server_prompt_tokens": 77,
                "server_completion_tokens": 11,
                "server_models": ["fake"],
                "system_fingerprints": ["fp-fake"],
                "invalid_answers": 1,
                "invalid_answer": "no top_logprobs",
            },
            "invalid_answers": 1,
            "invalid_answer": "no top_logprobs",
        },
    },
    {
        "prompt_tokens": 0,
        "generated_tokens": 0,
        "forward_passes": 0,
        "extra": {"scores_reused": True},
    },
    # a debiaser (psc) over HTTP: its inner requests summed, keys sorted
    {
        "prompt_tokens": 4427,
        "generated_tokens": 9,
        "forward_passes": 9,
        "parse_status": "ok",
        "extra": {
            "inner_orders": 3,
            "http": {
                "cached": 2,
                "requests": 9,
                "server_completion_tokens": 9,
                "server_prompt_tokens": 63,
            },
            "method": "psc",
        },
    },
    # FIRST on a local model: no request
    {
        "prompt_tokens": 500,
        "generated_tokens": 3,
        "forward_passes": 3,
        "parse_status": "ok",
        "extra": {"window_details": [{"identifier_mass": 0.9}]},
    },
    # a control: no cost at all
    {"latency_ms": 0.1},
]


def _samples(facts: list[dict]) -> list[Sample]:
    return [
        Sample("q", i, OrderLabel("random", i), (0,), ("a",), None, f) for i, f in enumerate(facts)
    ]


def test_old_samples_give_the_counts_the_harness_computed_before_typed_records():
    """The numbers are what CostCounter at 0889472 (string-keyed tallies) gave for FACTS."""
    counter = CostCounter()
    counter.add(_samples(FACTS))
    assert counter.counts() == {
        "prompt_tokens": 8705,
        "generated_tokens": 37,
        "requests": 27,
        "requests_cached": 6,
        "server_prompt_tokens": 168,
        "server_completion_tokens": 24,
    }
    local = CostCounter()
    local.add(_samples(FACTS[-2:]))
    assert local.counts() == {"prompt_tokens": 500, "generated_tokens": 3}
    control = CostCounter()
    control.add(_samples(FACTS[-1:]))
    assert control.counts() == {}


def test_each_stored_shape_reads_as_its_requests():
    first, capcal, chat, dry, pointwise, reused, psc, local, control = map(stored_usage, FACTS)
    assert first == Usage(2, 1479, 2, HttpUsage(2, 1, 16, 2))
    assert capcal.http == HttpUsage(2, 0, 12, 2)
    assert chat.http == HttpUsage(1, 0, 0, 0)  # no usage reported: a request all the same
    assert dry.http == HttpUsage(1)
    assert pointwise == Usage(1, 1089, 0, HttpUsage(12, 3, 77, 11))
    assert reused == control == Usage()
    assert psc == Usage(9, 4427, 9, HttpUsage(9, 2, 63, 9))
    assert local == Usage(3, 500, 3)
    # a summary written from the typed record reads back as that record
    assert HttpUsage.of_record(psc.http.stored()) == psc.http


def test_records_add_field_by_field():
    a, b = Usage(1, 10, 2, HttpUsage(1, 0, 7, 1)), Usage(2, 5, 0, HttpUsage(3, 2, 1, 0))
    assert a + b == Usage(3, 15, 2, HttpUsage(4, 2, 8, 1))
    assert total([a, b, a], Usage()) == a + b + a
    assert total([], HttpUsage()) == HttpUsage()
    calls = [{"prompt_tokens": 7, "completion_tokens": 1, "cached": True}, {}]  # {}: local
    assert HttpUsage.of_calls(calls) == HttpUsage(1, 1, 7, 1)
