"""The summary's cost (``summarize``): its share of a DL19 ``identity`` run, and its seconds per
(query x order) as a run grows; an older checkout against this tree, side by side.

* **DL19 share:** ``harness run --reranker identity --dataset msmarco-dl19 --perms 20``
  (43 queries x 21 orders), a fresh run ``--rounds`` times per tree, the trees alternating so
  both see the same machine state; the summary is timed inside the process, the run outside.
  Medians are printed.
* **Scale:** synthetic TREC data (``bench_scale.make_data``), ``--sizes`` queries x
  ``--candidates`` x 21 orders (20 random + the reference). Each size is run once with this
  tree; then each tree resumes the finished run, which reranks nothing and summarises every
  sample from disk again: the summary's seconds, its microseconds per (query x order), and the
  peak RSS of that process. Linear means the same microseconds at every size.

Usage (from the repository root; ``git archive <commit> | tar -x -C /tmp/before`` for the
before, with ``/tmp/shared`` a link to the shared data so DL19's card finds it)::

    .venv/bin/python benchmarks/bench_summary.py --before /tmp/before
    .venv/bin/python benchmarks/bench_summary.py --before /tmp/before --skip-dl19 --sizes 2000 20000

On a shared machine other processes inflate the times (the load average is printed): read the
ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_scale import PERMS, make_data

ROOT = Path(__file__).resolve().parent.parent

TIMED = r"""
import json, resource, sys, time
import harness.results.summary as summary
real, spent, cpu = summary.summarize, [], []
def timed(*args, **kwargs):
    started, started_cpu = time.perf_counter(), time.process_time()
    try:
        return real(*args, **kwargs)
    finally:
        spent.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
summary.summarize = timed  # the runner imports it from the module when the results are due
from harness.cli import app
try:
    app(["run", *sys.argv[1:]])
except SystemExit as exc:
    if exc.code:
        raise
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
timed = {"summary_s": sum(spent), "summary_cpu_s": sum(cpu), "rss_mb": rss}
print("TIMED " + json.dumps(timed), file=sys.stderr)
"""


def timed_run(tree: Path, args: list[str]) -> dict[str, float]:
    """``harness run ARGS`` with ``tree``'s harness: wall and CPU seconds of the whole process,
    the summary's wall and CPU seconds inside it, and its peak RSS (MB)."""
    env = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            [sys.executable, "-P", "-c", TIMED, *args],
            cwd=tree,  # the dataset cards' relative paths resolve from the working directory
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        errors.seek(0)
        stderr = errors.read()
    lines = [line for line in stderr.splitlines() if line.startswith("TIMED ")]
    if os.waitstatus_to_exitcode(status) or not lines:
        raise SystemExit(f"harness run {' '.join(args)} failed in {tree}:\n{stderr}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, **json.loads(lines[-1][len("TIMED ") :])}


def dl19_share(trees: dict[str, Path], rounds: int, work: Path) -> None:
    args = ["--reranker", "identity", "--dataset", "msmarco-dl19", "--perms", str(PERMS)]
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for round_ in range(rounds):
        for name, tree in trees.items():
            out = work / f"dl19-{name}-{round_}"
            seen[name].append(timed_run(tree, [*args, "--out", str(out)]))
    print(f"DL19 identity run, --perms {PERMS} (43 queries x {PERMS + 1} orders), fresh runs;")
    print(f"median of {rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':>8} {'wall clock':>28} {'CPU time (less load-dependent)':>32}")
    columns = f"{'run s':>8} {'summary s':>10} {'share':>8}"
    print(f"{'tree':>8} {columns}   {columns}")
    for name, runs in seen.items():
        cells = []
        for run_key, summary_key in (("wall_s", "summary_s"), ("cpu_s", "summary_cpu_s")):
            whole = statistics.median(r[run_key] for r in runs)
            spent = statistics.median(r[summary_key] for r in runs)
            share = statistics.median(r[summary_key] / r[run_key] for r in runs)
            cells.append(f"{whole:>8.2f} {spent:>10.2f} {share:>8.0%}")
        print(f"{name:>8} {cells[0]}   {cells[1]}")


SUMMARIZE = r"""
import json, resource, sys, time
from pathlib import Path
from harness.data.trec import load_trec_dataset
from harness.results.store import RunStore
from harness.results.summary import summarize
folder = Path(sys.argv[1])
files = [folder / name for name in ("run.trec", "topics.tsv", "corpus.jsonl", "qrels.txt")]
dataset = load_trec_dataset(*files, name="synthetic")
index = RunStore(folder).scan_samples(keys_only=True)
started, started_cpu = time.perf_counter(), time.process_time()
sections = summarize(dataset.sets, dataset.qrels, index, seed=0, relevance_level=1)
spent, cpu = time.perf_counter() - started, time.process_time() - started_cpu
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
value = sections["summary"]["kendall_tau"]["value"]
timed = {"summary_s": spent, "cpu_s": cpu, "rss_mb": rss, "kendall_tau": value}
print("TIMED " + json.dumps(timed))
"""


def write_samples(folder: Path, queries: int, candidates: int, seed: int = 0) -> None:
    """What the ``identity`` reranker writes for ``make_data``'s sets: the reference order and
    ``PERMS`` seeded shuffles, each output equal to the order shown (key first, as the
    harness writes it)."""
    rng = np.random.default_rng(seed)
    docs: dict[str, list[str]] = {}
    for line in (folder / "run.trec").read_text().splitlines():
        qid, _, doc, *_ = line.split()
        docs.setdefault(qid, []).append(doc)
    facts = {"latency_ms": 0.02, "forward_passes": 0, "parse_status": "not_applicable"}
    with (folder / "samples.jsonl").open("w") as out:
        for q in range(queries):
            qid = f"q{q}"
            orders = [np.arange(candidates)] + [rng.permutation(candidates) for _ in range(PERMS)]
            for index, shown in enumerate(orders):
                label = "reference" if index == 0 else f"random:{index - 1}"
                sample = {
                    "query_id": qid,
                    "order_index": index,
                    "label": label,
                    "shown": shown.tolist(),
                    "ranking": [docs[qid][i] for i in shown],
                    "scores": None,
                    "facts": facts,
                }
                out.write(json.dumps(sample, separators=(",", ":")) + "\n")


def summarize_in(tree: Path, folder: Path) -> dict[str, float]:
    """``summarize`` over ``folder``'s samples with ``tree``'s harness, in a fresh process."""
    env = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-P", "-c", SUMMARIZE, str(folder)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("TIMED ")]
    if done.returncode or not lines:
        raise SystemExit(f"summarize failed in {tree}:\n{done.stderr}")
    return json.loads(lines[-1][len("TIMED ") :])


def scale(
    trees: dict[str, Path], sizes: list[int], candidates: int, compare_max: int, work: Path
) -> None:
    print("\nsummarize() over a samples file (read from disk a chunk of queries at a time),")
    print(f"synthetic data, {candidates} candidates x {PERMS + 1} orders per query")
    print(f"{'queries':>8} " + " ".join(f"{name:>46}" for name in trees))
    per_cell: dict[str, list[tuple[int, float]]] = {name: [] for name in trees}
    for size in sizes:
        data = make_data(work / f"data{size}", size, candidates=candidates)
        write_samples(data, size, candidates)
        cells, values = [], set()
        for name, tree in trees.items():
            if tree != ROOT and size > compare_max:
                cells.append("(not run)")
                continue
            result = summarize_in(tree, data)
            micro = result["cpu_s"] / (size * (PERMS + 1)) * 1e6
            per_cell[name].append((size, micro))
            values.add(result["kendall_tau"])
            wall, cpu, rss = result["summary_s"], result["cpu_s"], result["rss_mb"]
            cells.append(f"{wall:7.1f} s {cpu:7.1f} s CPU {micro:5.0f} us/qo {rss:5.0f} MB")
        same = "same kendall_tau" if len(values) == 1 else f"DIFFER {sorted(values)}"
        print(f"{size:>8} " + " ".join(f"{c:>46}" for c in cells) + f"  {same}")
        (data / "samples.jsonl").unlink()
    for name, cells in per_cell.items():
        if len(cells) > 1:
            (small, first), (large, last) = cells[0], cells[-1]
            ratio = last / first
            print(f"{name}: cost per (query x order) at {large} / at {small} queries: {ratio:.2f}")
    print("wall, CPU seconds; us/qo: CPU microseconds per (query x order); peak RSS")
    print(f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="an older checkout to measure beside this tree")
    parser.add_argument("--rounds", type=int, default=3, help="DL19 runs per tree")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument(
        "--candidates",
        type=int,
        default=40,
        help="per synthetic query (GPI's Kemeny search grows as n^3: 100 takes ~20x longer)",
    )
    parser.add_argument(
        "--compare-max", type=int, default=2000, help="summarise with --before up to this size"
    )
    parser.add_argument("--skip-dl19", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    trees = {"this": ROOT}
    if args.before:
        trees = {"before": Path(args.before).resolve(), "this": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench-summary-") as tmp:
        if not args.skip_dl19:
            dl19_share(trees, args.rounds, Path(tmp))
        if not args.skip_scale:
            scale(trees, args.sizes, args.candidates, args.compare_max, Path(tmp))


if __name__ == "__main__":
    main()
