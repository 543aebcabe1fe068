"""Start the executor a run asks for. Apart from the package root, which the executors
themselves import for the unit and outcome types, so the root never imports them back."""

from __future__ import annotations

from harness.executors import Executor, ExecutorOptions, RerankerFactory
from harness.executors.local import LocalExecutor
from harness.rerankers.base import RunContext
from harness.rerankers.preset import RerankerPreset


def start_executor(
    options: ExecutorOptions,
    preset: RerankerPreset,
    context: RunContext,
    factory: RerankerFactory,
) -> Executor:
    """Load the reranker(s) where ``options`` says."""
    if options.kind == "ray":
        from harness.executors.ray_cluster import RayExecutor  # its module is read only when asked

        return RayExecutor.start(options, preset, context, factory)
    return LocalExecutor(factory(preset, context))
