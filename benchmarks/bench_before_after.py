"""Wall time of whole runs, an older checkout against this tree, on a fresh numba cache.

What a user waits for: a DL19 ``identity`` run (no model: the metrics and I/O are all the
time there is) and the README's main job (``--reranker invarirank --perms 20`` on
MovieLens), each run as ``python -m harness run`` by this venv's Python, the older code put
first on ``PYTHONPATH``. Each version gets its own empty ``NUMBA_CACHE_DIR``, then its own
set-up step (``compile_kernels``, as ``scripts/setup.sh`` runs it): the first round of runs is
a fresh machine's first run of each dataset; later rounds (``--rounds``) are warm. The steps
alternate between the versions (before, this, before, this, ...), so both see the same
machine state. A step "compiled" when numba saved new kernels in the cache during it
(numba's typed containers compile in every process without saving anything: that tax shows
in the times only).

Usage (from the repository root; ``git worktree add /tmp/old19r d15e31e`` for the before)::

    .venv/bin/python benchmarks/bench_before_after.py --before /tmp/old19r
    .venv/bin/python benchmarks/bench_before_after.py --before /tmp/old19r --main-queries 2

On a shared machine other processes inflate the times (the load average is printed before
each step): read the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_scale import harness_run

ROOT = Path(__file__).resolve().parent.parent
WARM = "from harness.metrics.effectiveness import compile_kernels; compile_kernels()"


def kernel_files(cache: Path) -> int:
    """Kernels numba has saved in ``cache``: one data file per compiled specialisation (a
    function's index file is shared by all of its specialisations)."""
    return sum(1 for _ in cache.rglob("*.nbc"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the older checkout (a git worktree)")
    parser.add_argument("--perms", type=int, default=20)
    parser.add_argument("--main-queries", type=int, default=None, help="default: the card's")
    parser.add_argument("--rounds", type=int, default=1, help="runs per step after set-up")
    args = parser.parse_args()
    os.chdir(ROOT)  # the dataset cards' relative paths resolve from the working directory
    trees = {"before": str(Path(args.before).resolve()), "this": str(ROOT)}
    identity = ["--reranker", "identity", "--dataset", "msmarco-dl19", "--perms", str(args.perms)]
    main_job = ["--reranker", "invarirank", "--perms", str(args.perms)]
    if args.main_queries:
        main_job += ["--queries", str(args.main_queries)]
    steps = [("set-up (compile_kernels)", None)]
    for round_ in range(1, args.rounds + 1):
        steps += [(f"DL19 identity, run {round_}", identity), (f"main job, run {round_}", main_job)]
    print(f"before = {trees['before']} ({commit(trees['before'])}), this = {commit(str(ROOT))}")
    print(f"main job: harness run {' '.join(main_job)}  (MovieLens-100K, SmolLM2-135M)")
    with tempfile.TemporaryDirectory(prefix="bench-before-after-") as tmp:
        work = Path(tmp)
        caches = {name: work / f"numba-{name}" for name in trees}
        rows = []
        for label, run_args in steps:
            cells = {}
            for name, tree in trees.items():
                env = {"NUMBA_CACHE_DIR": str(caches[name]), "PYTHONPATH": tree}
                saved = kernel_files(caches[name])
                load = os.getloadavg()[0]
                if run_args is None:
                    seconds = timed([sys.executable, "-P", "-c", WARM], env)
                else:
                    out = work / f"{name}-{len(rows)}"
                    seconds = harness_run([*run_args, "--out", str(out)], env=env)[1]
                compiled = kernel_files(caches[name]) - saved
                cells[name] = (seconds, compiled, load)
            rows.append((label, cells))
            print_row(label, cells)
        sizes = {name: (work / f"{name}-1" / "results.json").stat().st_size / 1e3 for name in trees}
        print(f"DL19 results.json: before {sizes['before']:.0f} KB, this {sizes['this']:.0f} KB")
        same = same_numbers(work / "before-1", work / "this-1")
        print(f"DL19 identity: shared summary values {'equal' if same else 'DIFFER'} before/this")


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=os.environ | env, check=True, capture_output=True)
    return time.perf_counter() - started


def print_row(label: str, cells: dict[str, tuple[float, int, float]]) -> None:
    (before, b_compiled, b_load), (this, t_compiled, t_load) = cells["before"], cells["this"]
    print(
        f"{label:<26} before {before:7.1f} s (kernels compiled {b_compiled:2d}, load {b_load:4.1f})"
        f"   this {this:7.1f} s (kernels compiled {t_compiled:2d}, load {t_load:4.1f})"
        f"   before/this {before / this:5.2f}x",
        flush=True,
    )


def same_numbers(left: Path, right: Path) -> bool:
    """The summary values both runs have agree within 1e-12 (latency aside: measured)."""

    def values(run: Path) -> dict[str, float]:
        summary = json.loads((run / "results.json").read_text())["summary"]
        return {k: v["value"] for k, v in summary.items() if not k.startswith("latency")}

    a, b = values(left), values(right)
    return all(
        a[k] == b[k] or (None not in (a[k], b[k]) and abs(a[k] - b[k]) <= 1e-12)
        for k in a.keys() & b.keys()
    )


def commit(tree: str) -> str:
    done = subprocess.run(
        ["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain"], capture_output=True)
    return done.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
