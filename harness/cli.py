"""The ``harness`` command line. Heavy modules are imported inside commands so --help is instant."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

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


@app.command()
def run(
    reranker: Annotated[
        str | None, typer.Option(help="Reranker preset name or path to a preset YAML.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset card name or data folder [default: movielens-100k]."),
    ] = None,
    perms: Annotated[
        int | None, typer.Option(help="Random orders per query (strategy random) [default: 20].")
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="random | identity | reversed | cyclic | sweep | exhaustive | fixed | templates "
            "[default: random]."
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            help="Seeded completions: per pin (fixed) [20], per position (sweep) [1 = the others "
            "in first-stage order], per partial template (templates) [1]."
        ),
    ] = None,
    pin: Annotated[
        str | None,
        typer.Option(
            help="fixed: ITEM@POSITION to pin, ITEM a first-stage index or 'relevant' (the first "
            "judged-relevant candidate), POSITION 0-based, -1 = last [relevant@0]."
        ),
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option(
            help="templates: a file with one JSON array per line of first-stage indices or "
            "null (null = filled by a seeded shuffle)."
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(
            help="Rerun the identity order R more times (in other batches): the noise floor "
            "each stability metric is shown beside and tested against [0]."
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Adaptive sampling (random): METRIC=HALF_WIDTH, e.g. kendall_tau=0.02; each "
            "query gets --min-perms..--perms orders until the run-level 95% interval is that "
            "narrow (docs/adaptive.md)."
        ),
    ] = None,
    min_perms: Annotated[
        int | None, typer.Option(help="Adaptive sampling: orders every query gets, 2 or more [3].")
    ] = None,
    queries: Annotated[
        str | None,
        typer.Option(
            help="N (the first N queries), id1,id2,... , @FILE (one id per line) or random:K "
            "(K drawn with --seed) [default: the dataset's].",
            metavar="N|IDS|@FILE|random:K",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Replace the preset's model: ORG/NAME[@REVISION], a .gguf file or a model "
            "folder [default: the preset's].",
            metavar="MODEL",
        ),
    ] = None,
    depth: Annotated[
        int | None, typer.Option(help="Keep the top K first-stage candidates [default: all].")
    ] = None,
    relevance_level: Annotated[
        int | None,
        typer.Option(
            help="Grade from which binary metrics (MRR@10) count a candidate as relevant "
            "(trec_eval -l) [default: the dataset card's: 2 for TREC DL, else 1].",
            metavar="N",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Permutation and bootstrap seed [0].")] = None,
    max_invalid_share: Annotated[
        float | None,
        typer.Option(
            help="The share of orders that may get invalid answers (a server's without "
            "log-probs or text after every retry, NaN log-probs); past it the run stops, "
            "keeping what it finished [0.05].",
            metavar="SHARE",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run folder; rerun with the same folder to resume [runs/<name>]."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda[:N] [default: cpu].")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Orders per reranker call [default: chosen per reranker: 4; rankgpt up to 16 "
            "orders of a query in equal calls, as memory allows]."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="run.yaml with any of these settings; flags override it.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the pending orders and their cost, run nothing, write nothing: an HTTP "
            "backend's requests and prompt tokens; a local model's forward passes, prompt and "
            "generated tokens and a time estimate from a short measured probe.",
        ),
    ] = False,
    log_prompts: Annotated[
        bool,
        typer.Option(
            "--log-prompts",
            help="Write every model call's exact prompt and raw output to prompts.jsonl in "
            "the run folder (opt-in; changes no number).",
        ),
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            help="local (this process) or ray (a pool of Ray actors, one reranker each; "
            "needs harness-rerank[ray]); the results are the same."
        ),
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(help="ray: actors [default: as many as the cluster's GPUs or CPUs fit]."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="ray: cluster to join (e.g. auto) [default: start a local one]."),
    ] = None,
    worker_gpus: Annotated[
        float | None,
        typer.Option(
            help="ray: GPUs per actor [default: the preset's resources, else 1 with --device cuda]."
        ),
    ] = None,
    worker_cpus: Annotated[
        float | None,
        typer.Option(help="ray: CPUs per actor [default: the preset's resources, else 1]."),
    ] = None,
) -> None:
    """Rerank every query in many seeded orders and write samples, results and a summary."""
    from harness.backends.threads import apply_wait_policy

    apply_wait_policy()  # before torch loads OpenMP: spin only on an idle machine
    from harness.config import merge_config
    from harness.errors import HarnessError
    from harness.executors import ExecutorOptions
    from harness.results.lock import RunFolderBusy
    from harness.results.markdown import render_summary
    from harness.results.store import holds_samples
    from harness.runner import execute_run, prepare_run

    with _user_errors():
        options = ExecutorOptions(
            kind=executor,
            workers=workers,
            address=ray_address,
            gpus_per_worker=worker_gpus,
            cpus_per_worker=worker_cpus,
        )
        if options.kind == "ray":
            from harness.executors.ray_cluster import import_ray

            import_ray()  # a missing extra is said before any data is loaded
        settings = merge_config(
            config,
            {
                "reranker": reranker,
                "dataset": dataset,
                "perms": perms,
                "strategy": strategy,
                "queries": queries,
                "depth": depth,
                "seed": seed,
                "out": None if out is None else str(out),
                "device": device,
                "batch_size": batch_size,
                "count": count,
                "pin": pin,
                "templates": None if templates is None else str(templates),
                "repeats": repeats,
                "model": model,
                "relevance_level": relevance_level,
                "max_invalid_share": max_invalid_share,
                "target": target,
                "min_perms": min_perms,
            },
        )
        prepared = prepare_run(settings)
        if dry_run:
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
                    log_prompts=log_prompts,
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


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # long lines stay whole in CI logs


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
        specs = parse_specs(max_drop or [], floor or [])
        reference = read_baseline(baseline)
        new = baseline_from_results(read_results(run_dir), run_dir)
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
    from harness.rerankers.stella import run_calibration

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
    from harness.rerankers.heads import select_heads as run_selection

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
    from harness.results.upgrade import upgrade_run

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


class _Signal:
    """Which signal stopped the run: Ctrl-C (SIGINT, exit 130) or SIGTERM (exit 143)."""

    def __init__(self) -> None:
        self.name, self.exit_code = "Ctrl-C", 130


@contextmanager
def _terminate_as_interrupt() -> Iterator[_Signal]:
    """SIGTERM (what CI runners and `timeout` send) stops a run as Ctrl-C does: finished
    orders are kept and the user is told how to resume."""
    import signal

    received = _Signal()

    def on_terminate(signum, frame) -> None:
        received.name, received.exit_code = "SIGTERM", 128 + signal.SIGTERM
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_terminate)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn HarnessError and filesystem errors into one red line and exit code 2, with no
    traceback."""
    from harness.errors import HarnessError
    from harness.files import os_error_line

    try:
        yield
    except HarnessError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:  # a folder that cannot be written or read, a full disk, ...
        typer.secho(f"error: {os_error_line(exc)}", fg="red", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.secho("interrupted (Ctrl-C); nothing more was written", fg="yellow", err=True)
        raise typer.Exit(130) from None


class _RunDisplay:
    """A rich progress bar with ETA for the reranking, then a status line for each later
    stage (one live display at a time, so the bar stops when a stage starts); where no bar
    can be drawn, plain progress lines (:class:`~harness.progress.ProgressLines`)."""

    def __init__(self, console, bar, task, lines) -> None:
        self._console, self._bar, self._task, self._lines = console, bar, task, lines

    def update(
        self,
        done: int,
        total: int,
        queries: tuple[int, int] | None = None,
        description: str | None = None,
    ) -> None:
        self._bar.update(self._task, completed=done, total=total, description=description)
        if self._lines is not None:
            self._lines(done, total, queries)

    def stage(self, text: str):
        self._bar.stop()
        if self._bar.disable:
            from contextlib import nullcontext

            if self._lines is not None:
                self._console.print(f"{text} ...")
            return nullcontext()
        return self._console.status(text)


@contextmanager
def _progress(console, description: str) -> Iterator[_RunDisplay]:
    """The run's display, driven by the runner's progress and stage callbacks.

    A bar on a terminal; elsewhere (CI logs, notebooks, nohup) a progress line every 30 s or
    10% of the orders (``HARNESS_PROGRESS_EVERY``: seconds). ``HARNESS_PROGRESS=1`` forces
    the bar, ``HARNESS_PROGRESS=0`` shows neither.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from harness.progress import ProgressLines

    wanted = os.environ.get("HARNESS_PROGRESS", "")
    bar_shown = wanted == "1" or (console.is_terminal and wanted != "0")
    lines = None if bar_shown or wanted == "0" else ProgressLines(description, console.file)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("orders"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not bar_shown,
    )
    with bar:
        yield _RunDisplay(console, bar, bar.add_task(description, total=None), lines)


def _mount_suite() -> None:
    from harness.suites.cli import suite_app  # typer only: --help stays instant

    app.add_typer(suite_app, name="suite")


_mount_suite()

if __name__ == "__main__":  # pragma: no cover
    app()
