"""``harness suite run | leaderboard | gate``: kept apart from harness/cli.py, which only mounts
it. Heavy modules are imported inside the commands, so ``harness --help`` stays instant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

suite_app = typer.Typer(
    help="Benchmark suites: run a versioned protocol, score rerankers, build a leaderboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@suite_app.command("run")
def run_command(
    suite: Annotated[str, typer.Argument(help="Bundled suite name or suite YAML file.")],
    reranker: Annotated[list[str], typer.Option(help="Reranker preset name or YAML (repeatable).")],
    out: Annotated[Path, typer.Option(help="Suite folder; rerun with the same folder to resume.")],
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    batch_size: Annotated[
        int | None, typer.Option(help="Orders per reranker call [default: per reranker].")
    ] = None,
    executor: Annotated[
        str, typer.Option(help="local or ray (passed to every run; see docs/scale.md).")
    ] = "local",
    workers: Annotated[int | None, typer.Option(help="ray: actors per run.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="ray: cluster to join.")] = None,
) -> None:
    """Run every task x reranker as ordinary run folders, then write a scorecard per reranker
    and a leaderboard of them (OUT/scorecards/, OUT/leaderboard.*)."""
    from harness.backends.threads import apply_wait_policy

    apply_wait_policy()
    from harness.cli_support import run_display, stderr_console, terminate_as_interrupt, user_errors
    from harness.executors import ExecutorOptions
    from harness.suites.leaderboard import write_leaderboard
    from harness.suites.run import run_suite
    from harness.suites.spec import resolve_suite

    with user_errors():
        options = ExecutorOptions(kind=executor, workers=workers, address=ray_address)
        if options.kind == "ray":
            from harness.executors.ray_cluster import import_ray

            import_ray()
        spec = resolve_suite(suite)
        console = stderr_console()
        console.print(f"suite {spec.label()}: {len(spec.tasks)} tasks x {len(reranker)} rerankers")
        with (
            run_display(console, f"suite {spec.name}") as display,
            terminate_as_interrupt() as received,
        ):

            def progress(done: int, total: int, what: str) -> None:
                display.update(done, total, description=what)

            try:
                result = run_suite(
                    spec,
                    reranker,
                    out,
                    device=device,
                    batch_size=batch_size,
                    executor=options,
                    progress=progress,
                    note=lambda line: console.print(f"[yellow]note:[/] {line}"),
                )
            except KeyboardInterrupt:
                console.print(
                    f"\n[yellow]interrupted ({received.name})[/]: finished orders are saved "
                    f"under {out / 'runs'}; rerun the same command to resume"
                )
                raise typer.Exit(received.exit_code) from None
        board = write_leaderboard(list(result.scorecards.values()), out)
    typer.echo(f"{result.runs} runs ({result.reused} already finished, reused)")
    for label, path in result.scorecards.items():
        typer.echo(f"scorecard {label}: {path}")
    typer.echo(f"leaderboard: {board.html} ({board.markdown.name}, {board.latex.name})")


@suite_app.command("leaderboard")
def leaderboard_command(
    cards: Annotated[list[Path], typer.Argument(help="Scorecards (JSON).", metavar="CARD")],
    out: Annotated[Path, typer.Option(help="Folder for leaderboard.html, .md and .tex.")],
) -> None:
    """Merge scorecards of one suite (same suite hash) into a sortable leaderboard."""
    from harness.cli_support import user_errors
    from harness.suites.leaderboard import write_leaderboard

    with user_errors():
        board = write_leaderboard(cards, out)
    typer.echo(f"leaderboard of {len(board.board.rows)} rerankers: {board.html}")
    typer.echo(f"markdown: {board.markdown}; latex: {board.latex}")


@suite_app.command("gate")
def gate_command(
    new: Annotated[Path, typer.Argument(help="The new scorecard.", metavar="NEW")],
    baseline: Annotated[Path, typer.Option(help="The recorded scorecard to gate against.")],
    max_drop: Annotated[
        list[str] | None,
        typer.Option(help="METRIC=MARGIN, repeatable (as `harness gate`) [registry defaults]."),
    ] = None,
    floor: Annotated[
        list[str] | None, typer.Option(help="METRIC=DROP, repeatable [3 x margin].")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Family-wise error rate per task (Holm).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the permutation tests.")] = 0,
) -> None:
    """Exit 1 when any task of NEW is less accurate or less stable than in the baseline."""
    from harness.cli_support import user_errors
    from harness.gates.gate import parse_specs
    from harness.suites.gate import gate_scorecards, render_suite_verdict
    from harness.suites.scorecard import read_scorecard

    with user_errors():
        specs = parse_specs(max_drop or [], floor or [])
        new_card, old_card = read_scorecard(new), read_scorecard(baseline)
        verdict = gate_scorecards(new_card, old_card, specs, alpha=alpha, seed=seed)
    typer.echo(render_suite_verdict(verdict, new_card, old_card))
    if not verdict.passed:
        raise typer.Exit(1)
