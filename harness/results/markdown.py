"""The short Markdown summary printed at the end of a run and saved as ``summary.md``."""

from __future__ import annotations

from collections.abc import Mapping

from harness.data.model import describe_dropped
from harness.metrics import registry
from harness.results.schema import RunResults


def render_summary(results: RunResults) -> str:
    dataset, perms = results.dataset, results.permutations
    counts = results.counts
    has_floor = bool(results.noise_floor)
    lines = [
        f"# {results.reranker.name} on {dataset.name}",
        "",
        f"{counts['queries']} queries, {counts['samples']} reranked orders "
        f"(strategy `{perms.strategy}`, {design_text(results)}; "
        f"seed {perms.seed}; depth {results.header.depth or 'all'}); "
        f"config `{results.header.config_hash}`",
        "",
    ]
    dropped = describe_dropped(dataset.notes)
    if dropped:
        lines += [f"Queries: {dataset.queries_available} available, {dropped}.", ""]
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
    invalid = validity_text(results)
    if invalid:
        lines += [invalid, ""]
    lines += [
        "| metric | value | 95% CI |"
        + (" noise floor |" if has_floor else "")
        + " what it shows |",
        "|---|---:|---:|" + ("---|" if has_floor else "") + "---|",
    ]
    for spec in results.metrics.headline():
        entry = results.summary.get(spec.name)
        if entry is None:
            continue
        ci = entry.ci95
        interval = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
        if entry.no_bias_floor is not None:
            interval = f"no-bias floor {_fmt(entry.no_bias_floor)}"
        floor = f" {floor_text(results, spec.name)} |" if has_floor else ""
        lines.append(
            f"| {results.label(spec.name)} | {value_text(results, spec.name, entry.value)} | "
            f"{interval} |{floor} {spec.shows} |"
        )
    lines += _floor_lines(results) + _repair_lines(results)
    parse = results.parse_status
    if parse:
        lines += ["", "| permutations | " + " | ".join(_statuses(parse)) + " |"]
        lines.append("|---|" + "---:|" * len(_statuses(parse)))
        for family, rates in parse.items():
            cells = " | ".join(f"{rates.get(s, 0.0):.1%}" for s in _statuses(parse))
            lines.append(f"| {family} | {cells} |")
    return "\n".join(lines) + "\n"


def validity_text(results: RunResults) -> str | None:
    """The line on invalid answers (:mod:`harness.validity`), None when the run had none."""
    invalid = results.counts.get("invalid_orders", 0)
    if not invalid:
        return None
    orders = results.counts["samples"]
    return (
        f"Invalid answers: {invalid} of {orders} orders ({invalid / orders:.2%}) got an answer "
        "that stayed invalid after every retry; they are left out of every other metric, and a "
        "rerun of the same command asks them again."
    )


def value_text(results: RunResults, metric: str, value: float | None, digits: int = 4) -> str:
    """A summary value as outputs print it: ``undefined (why)`` where the design cannot
    measure the metric, never a number that would read as a finding; a value defined for only
    some queries says for how many it is not."""
    undefined = results.undefined_text(metric)
    if value is None or value != value:
        return undefined or "n/a"
    text = f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} ({undefined})" if undefined else text


def design_text(results: RunResults) -> str:
    """The orders of the design in words: ``20 random + identity reference``,
    ``pin relevant@0, 20 completions + identity reference``, ``..., + 2 identity repeats``."""
    config, perms = results.config, results.permutations
    strategy = perms.strategy
    if strategy == "random" and config.get("target"):  # adaptive: harness.adaptive
        text = (
            f"{config.get('min_perms') or 3} to {perms.random_orders} random (adaptive, target "
            f"{config['target']}) + identity reference"
        )
    elif strategy == "random":
        text = f"{perms.random_orders} random + identity reference"
    elif strategy == "fixed":
        text = (
            f"pin {config.get('pin') or 'relevant@0'}, {config.get('count') or 20} completions "
            "+ identity reference"
        )
    elif strategy == "templates":
        text = f"templates {config.get('templates')}, {config.get('count') or 1} per partial one"
    elif strategy == "sweep":
        text = f"{config.get('count') or 1} completion(s) per position"
    else:
        text = f"{perms.total_orders} orders in all"
    repeats = config.get("repeats") or 0
    return text + (f" + {repeats} identity repeats" if repeats else "")


def floor_text(results: RunResults, metric: str) -> str:
    """``0.2610 [0.2300, 0.2900], within`` : a metric's noise floor [95% CI] and the paired
    test's verdict (none for a floor written before the test); empty when it has no floor."""
    floor = results.floor(metric)
    if floor is None:
        return ""
    low, high = floor.get("ci95") or (None, None)
    text = f"{_fmt(floor.get('value'))} [{_fmt(low)}, {_fmt(high)}]"
    if results.floor_tested and "within_floor" in floor:
        text += ", within" if floor["within_floor"] else ", outside"
    return text


def excess_text(results: RunResults, metric: str) -> str:
    """``+0.0170 [-0.0056, +0.0390], p 0.61``: the mean excess instability over the floor
    (design minus floor, positive = less stable across orders) and its Holm-adjusted p;
    empty where the floor has no test."""
    floor = results.floor(metric)
    if not results.floor_tested or floor is None or "p_holm" not in floor:
        return ""
    low, high = floor.get("excess_ci95") or (None, None)
    return (
        f"{_signed(floor.get('excess'))} [{_signed(low)}, {_signed(high)}], p {floor['p_holm']:.2g}"
    )


def floor_note(results: RunResults) -> str:
    """What the floor is, how it is compared, what it means for this reranker, and which
    measured instabilities it explains."""
    section = results.noise_floor
    repeats = section.get("repeats", 0)
    note = (
        f"Noise floor: the first-stage order shown {repeats + 1} times (order 0 and "
        f"{repeats} reruns, in other batches), so nothing about the order changed."
    )
    if not results.floor_tested:
        return note + (
            " This floor was written before the paired floor test (it compared two point "
            "estimates), so no verdict is shown; rerun the same `harness run` command to "
            "recompute it from the samples (nothing is reranked)."
        )
    matched = section.get("matched_orders") or [0, 0]
    m = f"{matched[0]}" if matched[0] == matched[1] else f"{matched[0]}-{matched[1]}"
    note += (
        " Each stability metric is computed over the reruns as the design computes it: means "
        "over pairs over every pair of reruns; PPI, GPI, distinct rankings and the spreads on "
        f"blocks of the same number of outputs on both sides (here {m}; the design's PPI "
        "cells given to the reruns), so 'measured' is the design's value on those blocks. "
        "Verdict: a paired one-sided sign-flip test over queries of the excess instability "
        f"(measured minus floor, positive = less stable), Holm across metrics at "
        f"{section.get('alpha', 0.05):g}: 'outside' = changing the order adds instability "
        "beyond the floor; 'within' = no evidence that it does."
    )
    if section.get("exact"):
        note += (
            " The reruns gave the same ranking for every query: the floor is exact invariance "
            "(a deterministic reranker), so any instability across orders is order "
            "sensitivity, and the test is exact (p 0 for any excess)."
        )
    else:
        note += (
            " The reruns differ: the floor is the reranker's own variability (a sampling or "
            "batch-dependent model), and only instability beyond it is put down to the order."
        )
    within = [
        spec.name
        for spec in results.metrics.with_floor()
        if (results.floor(spec.name) or {}).get("within_floor")
    ]
    if within:
        note += f" Within the floor here: {', '.join(within)}."
    return note


def _floor_lines(results: RunResults) -> list[str]:
    if not results.noise_floor:
        return []
    tested = results.floor_tested
    lines = ["", floor_note(results), ""]
    if tested:
        lines += [
            "| metric | measured | noise floor [95% CI] | excess over the floor [95% CI], "
            "p (Holm) |",
            "|---|---:|---:|---:|",
        ]
    else:
        lines += ["| metric | measured | noise floor [95% CI] |", "|---|---:|---:|"]
    for spec in results.metrics.with_floor():
        floor = results.floor(spec.name) or {}
        measured = floor.get("design") if tested else results.summary_value(spec.name)
        row = (
            f"| {results.label(spec.name)} | {value_text(results, spec.name, measured)} | "
            f"{floor_text(results, spec.name)} |"
        )
        lines.append(row + (f" {excess_text(results, spec.name)} |" if tested else ""))
    spread = results.floor("score_spread")
    if spread is not None:
        lines.append(
            f"| score_spread (largest score change) | | {floor_text(results, 'score_spread')} |"
            + (" |" if tested else "")
        )
    return lines


REPAIR_NOTE = (
    "A repair appends the ids the model never named in their input order, which itself "
    "injects order dependence: read the stability metrics of a generative reranker beside "
    "its repair rate."
)


def _repair_lines(results: RunResults) -> list[str]:
    lines = []
    for name in (registry.PARSE_REPAIR_RATE, registry.TIE_RATE):
        value = results.summary_value(name)
        if value == value:  # not NaN: the reranker generates (repairs) or scores (ties)
            lines.append(f"- {name}: {_fmt(value)} ({registry.get(name).shows})")
    if lines and results.summary_value(registry.PARSE_REPAIR_RATE) > 0:
        lines.append(f"- {REPAIR_NOTE}")
    return ["", *lines] if lines else []


def _statuses(parse: Mapping[str, Mapping[str, float]]) -> list[str]:
    return sorted({status for rates in parse.values() for status in rates})


def _fmt(value: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"


def _signed(value: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:+.4f}"
