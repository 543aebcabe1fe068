"""What every command of the command line shares: error lines instead of tracebacks, the run
display, SIGTERM handled as Ctrl-C. Apart from ``harness.cli`` so the suite commands
(``harness.suites.cli``) use them without importing the command line they are mounted on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # long lines stay whole in CI logs


class Signal:
    """Which signal stopped the run: Ctrl-C (SIGINT, exit 130) or SIGTERM (exit 143)."""

    def __init__(self) -> None:
        self.name, self.exit_code = "Ctrl-C", 130


@contextmanager
def terminate_as_interrupt() -> Iterator[Signal]:
    """SIGTERM (what CI runners and `timeout` send) stops a run as Ctrl-C does: finished
    orders are kept and the user is told how to resume."""
    import signal

    received = Signal()

    def on_terminate(signum, frame) -> None:
        received.name, received.exit_code = "SIGTERM", 128 + signal.SIGTERM
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_terminate)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def user_errors() -> Iterator[None]:
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


class RunDisplay:
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
def run_display(console, description: str) -> Iterator[RunDisplay]:
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
        yield RunDisplay(console, bar, bar.add_task(description, total=None), lines)
