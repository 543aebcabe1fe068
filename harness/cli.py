"""The ``harness`` command line. Heavy modules are imported inside commands so --help is instant."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

# The run display and error handling the suite commands share (harness.suites.cli)
from harness.cli_support import run_display as _progress
from harness.cli_support import stderr_console as _stderr_console
from harness.cli_support import terminate_as_interrupt as _terminate_as_interrupt
from harness.cli_support import user_errors as _user_errors
from harness.options import cli_signature, config_flags

app = typer.Typer(
    help="Measure how much a reranker's output depends on the order of its candidates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich markup would read "[default: ...]" as a tag and drop it, and rich's
    # layout gives flags such as --help a bogus "<bool>" metavar.
    rich_markup_mode=None,
)


def _default_gates() -> str:
    """``ndcg@10=0.01, ...``: the registry's default gates, for the gate's help text."""
    from harness.metrics.registry import default_gates

    return ", ".join(f"{spec.name}={spec.gate_margin:g}" for spec in default_gates())


def run(**flags: Any) -> None:
    """Rerank every query in many seeded orders and write samples, results and a summary."""
    from harness.backends.threads import apply_wait_policy

    apply_wait_policy()  # before torch loads OpenMP: spin only on an idle machine
    from harness.config import merge_config
    from harness.errors import HarnessError
    from harness.executors import executor_options
    from harness.results.lock import RunFolderBusy
    from harness.results.markdown import render_summary
    from harness.results.store import holds_samples
    from harness.runner import execute_run, prepare_run

    with _user_errors():
        options = executor_options(flags)
        if options.kind == "ray":
            from harness.executors.ray_cluster import import_ray

            import_ray()  # a missing extra is said before any data is loaded
        settings = merge_config(flags["config"], config_flags(flags))
        prepared = prepare_run(settings)
        if flags["dry_run"]:
            _print_dry_run(prepared)
            return
        console = _stderr_console()
        for note in prepared.notes:
            console.print(f"[yellow]note:[/] {note}")
        console.print(_work_line(prepared))
        with (
            _progress(console, f"{prepared.preset.name} on {prepared.card.name}") as display,
            _terminate_as_interrupt() as received,
        ):
            try:
                results = execute_run(
                    prepared,
                    progress=display.update,
                    stage=display.stage,
                    log_prompts=flags["log_prompts"],
                    executor=options,
                )
            except KeyboardInterrupt:
                saved = (
                    f"finished orders are saved in {prepared.run_dir}; rerun the same command "
                    "to resume"
                    if holds_samples(prepared.run_dir)
                    else "no order had finished"
                )
                console.print(f"\n[yellow]interrupted ({received.name})[/]: {saved}")
                raise typer.Exit(received.exit_code) from None
            except RunFolderBusy:
                raise  # the folder is another run's: nothing of this one is in it
            except Exception as exc:  # keep the user's work visible, whatever went wrong
                if not holds_samples(prepared.run_dir):
                    raise  # nothing was kept: saying where it is would send the user looking
                kept = f"finished orders are kept in {prepared.run_dir}"
                if isinstance(exc, HarnessError):
                    exc.args = (f"{exc} ({kept})",)
                else:
                    console.print(f"\n[red]failed[/]: {kept}; rerun the same command to resume")
                raise
    typer.echo(render_summary(results))
    typer.echo(f"results: {prepared.run_dir / 'results.json'}")


# harness.options declares every flag of `run` (and evaluate()'s keywords, and the YAML keys)
run.__signature__ = cli_signature()  # type: ignore[attr-defined]
app.command()(run)


def _print_dry_run(prepared) -> None:
    from harness.runner import dry_run

    typer.echo(dry_run_text(dry_run(prepared), prepared.preset.name, prepared.card.name))


def dry_run_text(counted, reranker: str, dataset: str) -> str:
    """What ``--dry-run`` prints: the pending work and its cost (a remote backend's requests,
    a local model's passes, tokens and time estimate)."""
    head = (
        f"dry run: {counted.orders} pending orders ({counted.queries} queries, "
        f"{counted.calls} reranker calls) of {reranker} on {dataset}"
    )
    usage = counted.usage
    if counted.estimate is None and usage:
        return (
            f"{head} would send {usage['requests_would_send']} requests "
            f"({usage['requests_cached']} more are answered by the cache), "
            f"{usage['local_prompt_tokens']} prompt tokens in all requests (local tokenizer; "
            "windows after an unanswered one are estimated); nothing was sent"
        )
    per_order = counted.forward_passes / max(counted.orders, 1)
    lines = [
        head,
        f"  forward passes: {counted.forward_passes} ({per_order:.3g} per order, as the "
        "forward_passes cost column counts them)",
        f"  prompt tokens: {counted.prompt_tokens} (rendered prompts, the model's tokenizer)",
        f"  generated tokens: {counted.generated_tokens}",
    ]
    estimate = counted.estimate
    if estimate is not None:
        if estimate.answer_tokens is not None:
            lines[-1] += (
                f" (estimate: the probe's mean answer, {estimate.answer_tokens} tokens, for "
                "every answer after it; later windows' prompts follow a stand-in answer)"
            )
        from harness.progress import duration

        lines.append(f"  time: ~{duration(estimate.seconds)} ({estimate.basis})")
    lines.append("nothing was written")
    return "\n".join(lines)


@app.command("list")
def list_presets() -> None:
    """Show the bundled rerankers and datasets (with whether each dataset is available here,
    and the published setup a preset or card reproduces, where it reproduces one)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from harness.data.registry import available_cards
    from harness.rerankers.registry import adapter_class, available_presets, backend_of

    with _user_errors():
        console = Console()
        rerankers = Table(
            "reranker", "adapter", "backend", "order-invariant", "description", title="Rerankers"
        )
        for preset in available_presets():
            invariant = "yes" if preset.order_invariant else "no"
            inner = preset.params.get("inner") if isinstance(preset.params, dict) else None
            toolkit = getattr(adapter_class(preset), "toolkit", None)
            backend = backend_of(preset) or (
                f"inner: {inner}"
                if inner
                else (f"toolkit {toolkit}" if toolkit else "none (no model)")
            )
            rerankers.add_row(
                preset.name,
                preset.adapter,
                backend,
                invariant,
                _with_reproduces(preset.reproduces, preset.description),
            )
        console.print(rerankers)
        datasets = Table("dataset", "task", "status", "source", title="Datasets")
        for card in available_cards():
            # Text, not markup: statuses hold brackets such as [ir-datasets]
            datasets.add_row(
                card.name,
                card.task,
                Text(card.status()),
                _with_reproduces(card.reproduces, card.source),
            )
        console.print(datasets)


def _with_reproduces(reproduces: str, text: str):
    """A list cell led by the published setup a preset or card reproduces, where it has one."""
    from rich.text import Text

    if not reproduces:
        return Text(text)
    return Text.assemble(("reproduces: ", "bold"), reproduces, "\n", text)


@app.command("datasets")
def datasets_command() -> None:
    """List every dataset card with its task, format and whether its data is on this machine."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from harness.data.registry import available_cards

    with _user_errors():
        table = Table("dataset", "task", "format", "status", title="Datasets")
        for card in available_cards():
            status = card.status()  # plain Text: messages hold brackets such as [ir-datasets]
            style = "green" if status == "available" else "yellow"
            table.add_row(card.name, card.task, card.loader["format"], Text(status, style=style))
        Console().print(table)
        typer.echo(
            "Also: --dataset PATH (a BEIR, TREC or RankGPT folder) or irds:<ir_datasets id>."
        )


@app.command()
def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Finished run folders.", metavar="RUN_DIR")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Path stem: writes STEM.html, STEM.md and STEM_figures/ "
            "[default: reports/<run folder names>]."
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            help="Most mean forward passes per order you can afford: 'What to use' picks "
            "among the runs within it [default: no limit].",
            min=0,
        ),
    ] = None,
    objective: Annotated[
        str,
        typer.Option(
            help="What 'What to use' optimises: effectiveness (NDCG@10), stability (Kendall "
            "tau) or both (the most stable run not significantly less effective)."
        ),
    ] = "both",
    open_: Annotated[
        bool,
        typer.Option("--open", help="Open the HTML report in the default web browser."),
    ] = False,
) -> None:
    """Write a self-contained HTML report and its Markdown twin for one or more runs."""
    from harness.report.build import write_report

    with _user_errors():
        files = write_report(run_dirs, out, budget=budget, objective=objective)
    typer.echo(f"html: {files.html}")
    typer.echo(f"markdown: {files.markdown} (figures in {files.figures})")
    if open_:
        import webbrowser

        if not webbrowser.open(files.html.resolve().as_uri()):
            typer.echo("no web browser found to open it; open the html file above", err=True)


@app.command()
def baseline(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.", metavar="RUN_DIR")],
    to: Annotated[
        Path, typer.Option("--to", help="Baseline file to write (reports/baselines/NAME.json).")
    ],
) -> None:
    """Record a run's per-query metrics and provenance as a baseline for `harness gate`."""
    from harness.gates.baseline import write_baseline
    from harness.results.store import read_results

    with _user_errors():
        written = write_baseline(read_results(run_dir), run_dir, to)
    typer.echo(f"baseline: {to} ({len(written.query_ids)} queries, {written.reranker['name']})")


@app.command()
def gate(
    run_dir: Annotated[
        Path, typer.Argument(help="A finished run folder to check.", metavar="RUN_DIR")
    ],
    baseline: Annotated[Path, typer.Option(help="Baseline file from `harness baseline`.")],
    max_drop: Annotated[
        list[str] | None,
        typer.Option(
            help="METRIC=MARGIN, repeatable: the drop tolerated. Given ones replace the default "
            f"gates {_default_gates()}."
        ),
    ] = None,
    floor: Annotated[
        list[str] | None,
        typer.Option(help="METRIC=DROP, repeatable: a mean drop that always fails [3 x margin]."),
    ] = None,
    alpha: Annotated[float, typer.Option(help="Family-wise error rate (Holm).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the permutation test and intervals.")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the verdict as JSON to this file.")
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option(help="Also write the verdict as JUnit XML (one test case per check)."),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            help="Also write a short Markdown block for a CI job summary; it is also appended "
            "to $GITHUB_STEP_SUMMARY when that is set."
        ),
    ] = None,
) -> None:
    """Exit 1 when RUN_DIR is less accurate or less stable than the baseline, else 0."""
    from harness.gates.baseline import baseline_from_results, read_baseline
    from harness.gates.gate import evaluate_gate, parse_specs, render_verdict
    from harness.results.store import read_results

    with _user_errors():
        results = read_results(run_dir)
        # the run's metrics, its own included (its results record them)
        specs = parse_specs(max_drop or [], floor or [], results.metrics)
        reference = read_baseline(baseline)
        new = baseline_from_results(results, run_dir)
        verdict = evaluate_gate(reference, new, specs, alpha=alpha, seed=seed)
        _write_verdicts(verdict, str(run_dir), str(baseline), json_out, junit, markdown)
    typer.echo(render_verdict(verdict, run_label=str(run_dir), baseline_label=str(baseline)))
    if not verdict.passed:
        raise typer.Exit(1)


def _write_verdicts(verdict, run_label, baseline_label, json_out, junit, markdown) -> None:
    """The machine-readable verdicts asked for (each file written whole or not at all)."""
    import json

    from harness.files import write_text_atomic
    from harness.gates.outputs import verdict_dict, verdict_junit, verdict_markdown

    labels = {"run_label": run_label, "baseline_label": baseline_label}
    if json_out is not None:
        text = json.dumps(verdict_dict(verdict, **labels), indent=2, allow_nan=False)
        write_text_atomic(json_out, text + "\n")
    if junit is not None:
        write_text_atomic(junit, verdict_junit(verdict, **labels))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if markdown is not None or summary:
        block = verdict_markdown(verdict, **labels)
        if markdown is not None:
            write_text_atomic(markdown, block)
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(block)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.", metavar="RUN_DIR")],
    trec: Annotated[
        Path,
        typer.Option(help="Folder for one TREC run file per order, qrels.txt and orders.tsv."),
    ],
) -> None:
    """Write a run's rerankings as TREC run files (trec_eval, ranx and ir_measures read them)."""
    from harness.results.export import export_trec
    from harness.results.store import read_results

    with _user_errors():
        results = read_results(run_dir)
        written = export_trec(run_dir, trec, results.reranker.name)
    typer.echo(
        f"trec: {len(written.run_files)} run files in {written.folder} "
        f"(qrels: {written.qrels.name}, orders: {written.orders.name})"
    )


@app.command("stella-calibrate")
def stella_calibrate(
    reranker: Annotated[str, typer.Option(help="The inner reranker preset STELLA will wrap.")],
    out: Annotated[Path, typer.Option(help="Calibration file to write (JSON).")],
    probe_queries: Annotated[
        int, typer.Option(help="Probe on the LAST N queries (--queries evaluates the first).")
    ],
    dataset: Annotated[str, typer.Option(help="Dataset card name or data folder.")] = (
        "movielens-100k"
    ),
    depth: Annotated[
        int | None, typer.Option(help="Keep the top K candidates (STELLA needs one count).")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Orders per (relevant item, position).")] = 5,
    smoothing: Annotated[float, typer.Option(help="Added to every transition count.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the probe orders.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Orders per reranker call.")] = 4,
) -> None:
    """Calibrate STELLA's position-transition matrix on held-out probe queries."""
    from harness.config import RunConfig
    from harness.errors import HarnessError
    from harness.files import ensure_writable_folder
    from harness.rerankers.base import RunContext
    from harness.tools.stella_calibrate import run_calibration

    with _user_errors():
        # the run's own checks for the settings they share, then STELLA's, before any work
        RunConfig(reranker=reranker, seed=seed, device=device, batch_size=batch_size).validate()
        for name, value, low in (("--probe-queries", probe_queries, 1), ("--repeats", repeats, 1)):
            if value < low:
                raise HarnessError(f"{name} must be at least {low}, got {value}")
        if depth is not None and depth < 1:
            raise HarnessError(f"--depth must be at least 1, got {depth}")
        if not smoothing > 0:
            raise HarnessError(f"--smoothing must be greater than 0, got {smoothing}")
        if out.is_dir():
            raise HarnessError(f"--out {out}: is a folder, expected a calibration file path")
        ensure_writable_folder(out.parent, "the calibration file")
        artifact = run_calibration(
            reranker,
            dataset,
            out,
            probe_queries=probe_queries,
            depth=depth,
            repeats=repeats,
            smoothing=smoothing,
            seed=seed,
            context=RunContext(device=device, seed=seed, batch_size=batch_size),
        )
    provenance = artifact.provenance
    typer.echo(
        f"STELLA calibration for {artifact.size} candidates from "
        f"{len(provenance['probe_query_ids'])} probe queries ({provenance['inner_calls']} inner "
        f"calls): {out}"
    )


@app.command("select-heads")
def select_heads(
    out: Annotated[Path, typer.Option(help="Head-selection artifact to write (JSON).")],
    split_queries: Annotated[
        int, typer.Option(help="Select on the LAST N queries (--queries evaluates the first).")
    ],
    reranker: Annotated[str, typer.Option(help="An icr preset scoring every head.")] = "icr",
    dataset: Annotated[str, typer.Option(help="Dataset card name or data folder.")] = (
        "msmarco-dl19"
    ),
    depth: Annotated[int | None, typer.Option(help="Keep the top K candidates.")] = None,
    top: Annotated[int, typer.Option(help="How many heads to keep.")] = 8,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
) -> None:
    """Choose ICR's heads by per-head nDCG@10 on a labelled split (not HeadRank's training)."""
    from harness.config import RunConfig
    from harness.errors import HarnessError
    from harness.files import ensure_writable_folder
    from harness.rerankers.base import RunContext
    from harness.tools.select_heads import select_heads as run_selection

    with _user_errors():
        RunConfig(reranker=reranker, device=device).validate()
        if depth is not None and depth < 1:
            raise HarnessError(f"--depth must be at least 1, got {depth}")
        if top < 1:
            raise HarnessError(f"--top must be at least 1, got {top}")
        ensure_writable_folder(out.parent, "the head selection")
        selection = run_selection(
            reranker,
            dataset,
            out,
            split_queries=split_queries,
            depth=depth,
            top=top,
            context=RunContext(device=device),
        )
    best = ", ".join(f"{layer}:{head}" for layer, head in selection.heads)
    typer.echo(
        f"selected {len(selection.heads)} heads ({best}) on "
        f"{selection.provenance['split_queries']} queries: {out}"
    )


@app.command()
def upgrade(
    run_dir: Annotated[
        Path, typer.Argument(help="A finished run folder of an older format.", metavar="RUN_DIR")
    ],
    dataset: Annotated[
        str | None,
        typer.Option(help="Where the run's data is now, if it moved [default: as recorded]."),
    ] = None,
) -> None:
    """Bring a run folder written by an older harness to the current format (needs its data)."""
    from harness.results.schema import FORMAT_VERSION
    from harness.tools.upgrade import upgrade_run

    with _user_errors():
        results = upgrade_run(run_dir, dataset)
    typer.echo(
        f"upgraded {run_dir} to run format {FORMAT_VERSION} "
        f"({results.counts['queries']} queries, {results.counts['samples']} samples kept)"
    )


def _work_line(prepared) -> str:
    """What the run will do, said before it starts (a typo in --perms shows here first)."""
    sets = len(prepared.dataset.sets)
    config, total = prepared.config, prepared.total_orders
    each = f"{total // max(sets, 1)} orders = {total:,}"
    if config.target is not None:  # adaptive: the rounds decide between the two
        low = total - sets * (config.perms - config.min_perms)
        each = (
            f"{low // max(sets, 1)} to {total // max(sets, 1)} orders (adaptive, target "
            f"{config.target}) = {low:,} to {total:,}"
        )
    return (
        f"work: {sets} queries x {each} reranked orders ({prepared.preset.name}, batches of "
        f"{config.batch_size}); folder {prepared.run_dir}"
    )


def _mount_suite() -> None:
    from harness.suites.cli import suite_app  # typer only: --help stays instant

    app.add_typer(suite_app, name="suite")


_mount_suite()

if __name__ == "__main__":  # pragma: no cover
    app()
