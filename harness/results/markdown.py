"""The short Markdown summary printed at the end of a run and saved as ``summary.md``."""

from __future__ import annotations

from collections.abc import Mapping

from harness.metrics import registry
from harness.results.schema import RunResults


def render_summary(results: RunResults) -> str:
    dataset, perms = results.dataset, results.permutations
    counts = results.counts
    lines = [
        f"# {results.reranker.name} on {dataset.name}",
        "",
        f"{counts['queries']} queries, {counts['samples']} reranked orders "
        f"(strategy `{perms.strategy}`, {perms.random_orders} random + identity reference; "
        f"seed {perms.seed}; depth {results.header.depth or 'all'}); "
        f"config `{results.header.config_hash}`",
        "",
    ]
    if "prompt_tokens" in counts and (counts["prompt_tokens"] or counts["generated_tokens"]):
        cost = (
            f"{counts['prompt_tokens']:,} prompt tokens, {counts['generated_tokens']:,} generated"
        )
        if "requests" in counts:
            cost += (
                f"; {counts['requests']:,} HTTP requests ({counts['requests_cached']:,} answered "
                f"by the cache; server counted {counts['server_prompt_tokens']:,} prompt + "
                f"{counts['server_completion_tokens']:,} completion tokens)"
            )
        lines += [f"Cost: {cost}.", ""]
    lines += [
        "| metric | value | 95% CI | what it shows |",
        "|---|---:|---:|---|",
    ]
    for spec in registry.headline():
        entry = results.summary.get(spec.name)
        if entry is None:
            continue
        ci = entry.ci95
        interval = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
        if entry.no_bias_floor is not None:
            interval = f"no-bias floor {_fmt(entry.no_bias_floor)}"
        lines.append(f"| {spec.name} | {_fmt(entry.value)} | {interval} | {spec.shows} |")
    parse = results.parse_status
    if parse:
        lines += ["", "| permutations | " + " | ".join(_statuses(parse)) + " |"]
        lines.append("|---|" + "---:|" * len(_statuses(parse)))
        for family, rates in parse.items():
            cells = " | ".join(f"{rates.get(s, 0.0):.1%}" for s in _statuses(parse))
            lines.append(f"| {family} | {cells} |")
    return "\n".join(lines) + "\n"


def _statuses(parse: Mapping[str, Mapping[str, float]]) -> list[str]:
    return sorted({status for rates in parse.values() for status in rates})


def _fmt(value: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
