"""The gate's verdict for machines: JSON, JUnit XML (which CI systems display as test
results) and a short Markdown block for a CI job summary.

Each is built from the same :class:`~harness.gates.gate.GateVerdict` as the text verdict,
so they cannot disagree with it: one JUnit test case per gated metric (and one for the
order-invariance check), failing with the reason the text verdict gives.
"""

from __future__ import annotations

import math
from typing import Any
from xml.etree import ElementTree

from harness.gates.gate import GateVerdict, MetricVerdict
from harness.metrics import registry
from harness.report.document import Table
from harness.report.markdown import table_lines

VALIDITY_CHECK = f"{registry.INVALID_SHARE} (validity)"


def verdict_dict(verdict: GateVerdict, *, run_label: str, baseline_label: str) -> dict[str, Any]:
    """The verdict as a JSON-ready mapping (NaN and infinity as null)."""
    new = verdict.new
    data: dict[str, Any] = {
        "passed": verdict.passed,
        "run": run_label,
        "baseline": baseline_label,
        "reranker": new.reranker.get("name"),
        "baseline_reranker": verdict.baseline.reranker.get("name"),
        "dataset": new.dataset.get("name"),
        "queries": len(new.query_ids),
        "relevance_level": new.relevance_level,
        "alpha": verdict.alpha,
        "metrics": [_metric(m) for m in verdict.metrics],
        "notes": list(verdict.notes),
    }
    if verdict.invariance is not None:
        data["order_invariance"] = {
            "passed": verdict.invariance.passed,
            "min_tau": _number(verdict.invariance.min_tau),
            "violations": [q for q, _ in verdict.invariance.violations],
        }
    data["validity"] = {
        "passed": verdict.validity.passed,
        "baseline_invalid_share": verdict.validity.baseline_share,
        "invalid_share": verdict.validity.new_share,
        "rule": verdict.validity.rule,
    }
    return data


def _metric(m: MetricVerdict) -> dict[str, Any]:
    """One metric: ``p``/``p_holm`` are the sign-flip test's (as before the order-noise test
    existed); ``order_noise`` holds that test's, or why it does not apply."""
    noise: dict[str, Any] = (
        {"applies": False, "why_not": m.noise_note}
        if math.isnan(m.noise_p)
        else {
            "applies": True,
            "p": _number(m.noise_p),
            "p_holm": _number(m.noise_p_holm),
            "se": _number(m.noise_se),
        }
    )
    return {
        "metric": m.spec.metric,
        "passed": m.passed,
        "skipped": m.skipped,
        "failed_by": list(m.failed_by),
        "reason": m.reason,
        "queries": m.n,
        "baseline_mean": _number(m.baseline_mean),
        "new_mean": _number(m.new_mean),
        "difference": _number(m.diff),
        "ci95": [_number(x) for x in m.ci95],
        "p": _number(m.p_value),
        "p_holm": _number(m.p_holm),
        "order_noise": noise,
        "margin": m.spec.margin,
        "floor": m.spec.floor,
        "detectable_drop": _number(m.detectable),
    }


def _number(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def verdict_junit(verdict: GateVerdict, *, run_label: str, baseline_label: str) -> str:
    """JUnit XML: a suite ``harness gate`` with one test case per check."""
    cases: list[tuple[str, str | None, str]] = []
    for m in verdict.metrics:
        noise = "n/a" if math.isnan(m.noise_p) else _f(m.noise_p_holm)
        detail = (
            f"baseline {_f(m.baseline_mean)}, new {_f(m.new_mean)}, difference "
            f"{_f(m.diff)} [{_f(m.ci95[0])}, {_f(m.ci95[1])}], sign-flip p (Holm) "
            f"{_f(m.p_holm)}, order-noise p (Holm) {noise}, margin {m.spec.margin:g}, "
            f"floor {m.spec.floor:g}, {m.n} queries"
        )
        if m.skipped:
            detail = m.reason  # JUnit's <skipped>: neither a pass nor a failure
        cases.append((m.spec.metric, None if m.passed else m.reason, detail))
    if verdict.invariance is not None:
        bad = [q for q, _ in verdict.invariance.violations]
        failure = f"FAIL: {len(bad)} queries moved ({', '.join(bad[:10])})" if bad else None
        cases.append(
            ("order invariance (declared)", failure, f"min tau {verdict.invariance.min_tau}")
        )
    valid = verdict.validity
    cases.append(
        (
            VALIDITY_CHECK,
            None if valid.passed else valid.reason,
            f"baseline {_f(valid.baseline_share)}, new {_f(valid.new_share)}, rule {valid.rule}",
        )
    )
    failures = sum(failure is not None for _, failure, _ in cases)
    skips = str(sum(m.skipped for m in verdict.metrics))
    suites = ElementTree.Element("testsuites", tests=str(len(cases)), failures=str(failures))
    suite = ElementTree.SubElement(
        suites,
        "testsuite",
        name="harness gate",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=skips,
    )
    properties = ElementTree.SubElement(suite, "properties")
    for name, value in (("run", run_label), ("baseline", baseline_label)):
        ElementTree.SubElement(properties, "property", name=name, value=value)
    skipped = {m.spec.metric for m in verdict.metrics if m.skipped}
    for name, failure, detail in cases:
        case = ElementTree.SubElement(suite, "testcase", classname="harness.gate", name=name)
        if failure is not None:
            ElementTree.SubElement(case, "failure", message=failure).text = detail
        elif name in skipped:
            ElementTree.SubElement(case, "skipped", message=detail)
        else:
            ElementTree.SubElement(case, "system-out").text = detail
    ElementTree.indent(suites)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        + ElementTree.tostring(suites, encoding="unicode")
        + "\n"
    )


def verdict_markdown(verdict: GateVerdict, *, run_label: str, baseline_label: str) -> str:
    """A few lines for a CI job summary (``$GITHUB_STEP_SUMMARY``): the decision, then one
    row per check. The full table is what ``harness gate`` prints."""
    mark = "✅ PASS" if verdict.passed else "❌ FAIL"
    lines = [
        f"#### harness gate: {mark}",
        "",
        f"`{run_label}` ({verdict.new.reranker.get('name')}) vs `{baseline_label}` "
        f"({verdict.baseline.reranker.get('name')}), {len(verdict.new.query_ids)} queries",
        "",
    ]
    level = verdict.new.relevance_level
    rows = [
        (m.spec.metrics.label(m.spec.metric, level), _f(m.baseline_mean), _f(m.new_mean), m.reason)
        for m in verdict.metrics
    ]
    if verdict.invariance is not None:
        bad = verdict.invariance.violations
        rows.append(
            (
                "order invariance (declared): min Kendall tau",
                "n/a",  # a check of the new run alone: nothing to compare with
                _f(verdict.invariance.min_tau),
                f"FAIL: {len(bad)} queries moved" if bad else "pass",
            )
        )
    valid = verdict.validity
    rows.append((VALIDITY_CHECK, _f(valid.baseline_share), _f(valid.new_share), valid.reason))
    table = Table(
        header=("check", "baseline", "new", "verdict"),
        rows=tuple(rows),
        numeric=(False, True, True, False),
    )
    lines += table_lines(table)  # the report's renderer: cells escaped (a "|" in a reason)
    return "\n".join(lines) + "\n"


def _f(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"
