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
    for spec in registry.headline():
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
    if strategy == "random":
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
    """``0.0000 [0.0000, 0.0000], within`` : a metric's noise floor and whether the measured
    value is within it; empty when the metric has no floor."""
    floor = results.floor(metric)
    if floor is None:
        return ""
    low, high = floor.get("ci95") or (None, None)
    text = f"{_fmt(floor.get('value'))} [{_fmt(low)}, {_fmt(high)}]"
    if "within_floor" in floor:
        text += ", within" if floor["within_floor"] else ", outside"
    return text


def floor_note(results: RunResults) -> str:
    """One sentence saying what the floor is and which measured instabilities it explains."""
    repeats = results.noise_floor.get("repeats", 0)
    within = [
        spec.name
        for spec in registry.with_floor()
        if (results.floor(spec.name) or {}).get("within_floor")
    ]
    note = (
        f"Noise floor: the first-stage order shown {repeats + 1} times (order 0 and "
        f"{repeats} reruns, in other batches), so nothing about the order changed; each "
        "stability metric is computed again over those reruns (means over queries, bootstrap "
        "95% CI). 'within' = the instability measured across orders is no larger than the "
        "floor's, i.e. it cannot be told apart from run-to-run jitter; 'outside' = larger."
    )
    if within:
        note += f" Within the floor here: {', '.join(within)}."
    return note


def _floor_lines(results: RunResults) -> list[str]:
    if not results.noise_floor:
        return []
    lines = ["", floor_note(results), "", "| metric | measured | noise floor [95% CI] |"]
    lines.append("|---|---:|---:|")
    for spec in registry.with_floor():
        lines.append(
            f"| {results.label(spec.name)} | "
            f"{value_text(results, spec.name, results.summary_value(spec.name))} | "
            f"{floor_text(results, spec.name)} |"
        )
    spread = results.floor("score_spread")
    if spread is not None:
        lines.append(
            f"| score_spread (largest score change) | | {floor_text(results, 'score_spread')} |"
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
