"""Pin castorini/rank_llm's own listwise prompts on a RankGPT-JSON run as data.

For every sliding window of every query (the first-stage order, each window left as it was
shown, so the windows are rank_llm's slices of the run), rank_llm's ``create_prompt`` renders
the prompt exactly as ``RankListwiseOSLLM`` feeds it to vLLM: its inference handler, the
tokenizer's chat template, ``ftfy.fix_text`` over each passage and over the whole prompt,
and (FIRST) the ``[`` that ``run_llm_async`` appends. The fixture keeps, per window, the
length and sha256 of the token ids and of the text; ``tests/test_rank_llm_parity.py`` renders
the harness's ``-reference`` presets on the same windows and compares, with no network and no
rank_llm installed.

rank_llm 0.26.0 needs Python >= 3.12; vLLM and torch are not needed (the reranker is built
without its engine). The tokenizer is the embedded SmolLM2's, as the presets use it: the
folder the harness converts it into (``~/.cache/harness/models/SmolLM2-135M-Instruct.Q4_1-*``,
made by any run or test that loads ``smollm2-135m``). To regenerate::

    python3.12 -m venv /tmp/rl
    /tmp/rl/bin/pip install rank-llm==0.26.0 ftfy==6.3.1 'transformers>=5.24,<6' jinja2
    /tmp/rl/bin/python scripts/rank_llm_prompts.py \\
        --tokenizer ~/.cache/harness/models/SmolLM2-135M-Instruct.Q4_1-<hash> \\
        --run ../shared/data/msmarco-dl19/bm25_top100.rankgpt.json \\
        --out tests/fixtures/rank_llm_dl19_prompts.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

WINDOW, STRIDE, TOP, WORDS, CONTEXT = 20, 10, 100, 300, 4096
DIGEST = 16  # hex characters of sha256 kept per window: plenty to tell prompts apart


@dataclass(frozen=True)
class Setup:
    """One harness preset and the rank_llm configuration it reproduces."""

    preset: str
    template: str  # rank_llm's template file under rank_llm/rerank/prompt_templates
    use_alpha: bool
    prime: str  # what run_llm_async appends to the rendered prompt


SETUPS = (
    Setup("rank-zephyr-reference", "rank_zephyr_template.yaml", False, ""),
    Setup("first-reference", "rank_zephyr_alpha_template.yaml", True, "["),
    Setup("rankgpt-reference", "rank_gpt_template.yaml", False, ""),
)


def digest(data: str | Sequence[int]) -> str:
    """Short sha256 of a text (UTF-8) or of token ids (their JSON list)."""
    raw = data.encode() if isinstance(data, str) else json.dumps(list(data)).encode()
    return hashlib.sha256(raw).hexdigest()[:DIGEST]


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """What tells two tokenizers apart for this purpose: vocabulary and chat template."""
    template = tokenizer.chat_template or ""
    return {"vocab_size": len(tokenizer), "chat_template_sha256": digest(template)}


def build_reranker(setup: Setup, tokenizer: Any, context: int = CONTEXT) -> Any:
    """rank_llm's RankListwiseOSLLM with its prompt state only: the vLLM engine that its
    constructor starts is not built (prompt rendering never touches it). ``context``: its
    context_size, which create_prompt shortens passages to fit."""
    from rank_llm.rerank.listwise.listwise_rankllm import ListwiseRankLLM
    from rank_llm.rerank.listwise.rank_listwise_os_llm import TEMPLATES, RankListwiseOSLLM

    reranker = RankListwiseOSLLM.__new__(RankListwiseOSLLM)
    ListwiseRankLLM.__init__(
        reranker,
        model="smollm2-135m",
        context_size=context,
        prompt_template_path=TEMPLATES / setup.template,
        window_size=WINDOW,
        stride=STRIDE,
        use_alpha=setup.use_alpha,
        device="cpu",
        max_passage_words=WORDS,
    )
    reranker._tokenizer = tokenizer
    reranker._base_url = None
    reranker._is_thinking = False
    reranker._output_token_estimate = None
    reranker._use_logits = setup.use_alpha
    return reranker


def requests(run: Path) -> list[Any]:
    """The run as rank_llm requests (its convert_json_to_jsonl: doc = {"contents": ...})."""
    from rank_llm.data import Candidate, Query, Request

    entries = json.loads(run.read_text(encoding="utf-8"))
    return [
        Request(
            Query(entry["query"], entry["hits"][0]["qid"]),
            [Candidate(h["docid"], h["score"], {"contents": h["content"]}) for h in entry["hits"]],
        )
        for entry in entries
    ]


def windows(reranker: Any, request: Any) -> list[tuple[int, int]]:
    """rank_llm's own sliding-window bounds, with every window left in its shown order."""
    seen: list[tuple[int, int]] = []

    def keep(result: Any, start: int, end: int, *args: Any, **kwargs: Any) -> Any:
        seen.append((start, end))
        return result

    reranker.permutation_pipeline = keep
    top = min(TOP, len(request.candidates))
    reranker.sliding_windows(request, rank_start=0, rank_end=top, top_k_retrieve=top)
    return seen


def window_rows(setup: Setup, tokenizer: Any, run: Path) -> tuple[list[list[Any]], int]:
    """Per window ``[qid, start, end, tokens, token sha, text sha]``, and how many windows
    rank_llm had to cut below ``WORDS`` words per passage to fit its context."""
    from rank_llm.data import Result

    reranker = build_reranker(setup, tokenizer)
    unbounded = build_reranker(setup, tokenizer, context=10**9)  # never cuts passages
    rows, shortened = [], 0
    for request in requests(run):
        result = Result(query=request.query, candidates=request.candidates)
        for start, end in windows(reranker, request):
            prompt, _ = reranker.create_prompt(result, start, end)
            shortened += prompt != unbounded.create_prompt(result, start, end)[0]
            text = prompt + setup.prime
            ids = tokenizer.encode(text)  # what vLLM does with a string prompt
            rows.append([str(request.query.qid), start, end, len(ids), digest(ids), digest(text)])
    return rows, shortened


def dump(fixture: dict[str, Any]) -> str:
    """The fixture as JSON, one window per line."""
    rows = {name: preset.pop("windows") for name, preset in fixture["presets"].items()}
    for name in rows:
        fixture["presets"][name]["windows"] = f"@{name}@"
    text = json.dumps(fixture, indent=1)
    for name, table in rows.items():
        lines = ",\n   ".join(json.dumps(row) for row in table)
        text = text.replace(f'"@{name}@"', f"[\n   {lines}\n  ]")
    return text + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, type=Path, help="SmolLM2 tokenizer folder")
    parser.add_argument("--run", required=True, type=Path, help="RankGPT JSON run")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.tokenizer.expanduser()))
    presets = {}
    for setup in SETUPS:
        rows, shortened = window_rows(setup, tokenizer, args.run)
        presets[setup.preset] = {
            "rank_llm_template": setup.template,
            "model_input": "create_prompt(...)" + (f" + {setup.prime!r}" if setup.prime else ""),
            "windows_shortened_to_fit": shortened,
            "columns": ["qid", "start", "end", "tokens", "token_ids_sha256", "text_sha256"],
            "windows": rows,
        }
    fixture = {
        "what": "rank_llm's rendered prompts per sliding window (see scripts/rank_llm_prompts.py)",
        "versions": {p: metadata.version(p) for p in ("rank-llm", "ftfy", "transformers")},
        "run": {"file": args.run.name, "sha256": hashlib.sha256(args.run.read_bytes()).hexdigest()},
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "setup": {
            "window": WINDOW,
            "stride": STRIDE,
            "top": TOP,
            "max_passage_words": WORDS,
            "context_size": CONTEXT,
            "digest_hex_chars": DIGEST,
        },
        "presets": presets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    counts = ", ".join(f"{name} {len(p['windows'])}" for name, p in presets.items())
    args.out.write_text(dump(fixture), encoding="utf-8")
    print(f"wrote {args.out}: windows per preset: {counts}")


if __name__ == "__main__":
    main()
