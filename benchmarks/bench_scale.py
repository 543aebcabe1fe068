"""Peak memory and throughput of a run as it grows: synthetic data, the ``identity`` reranker.

Two measurements, side by side in one run:

* **Peak RSS** of ``harness run`` (a fresh run, then resuming the finished run) over
  ``--sizes`` queries x 100 candidates x 21 orders (20 random + the reference). The goal:
  flat in the number of queries, since samples stream from disk. ``--compare-with`` runs the
  same commands with another checkout's ``harness`` (e.g. ``/work/main``, before streaming).
* **Loading alone** (``--load-only``): peak RSS and Python's traced peak (tracemalloc, in a
  second process, since tracing inflates RSS) of ``load_trec_dataset`` on ``--sizes`` queries.
* **Throughput** (orders per second of reranking wall time, actor start-up included) of the
  local executor vs Ray with 1 and 2 workers, on ``--throughput-queries`` queries.

Usage::

    .venv/bin/python benchmarks/bench_scale.py
    .venv/bin/python benchmarks/bench_scale.py --sizes 2000 20000 --compare-with /work/main
    .venv/bin/python benchmarks/bench_scale.py --skip-memory --throughput-queries 200
    .venv/bin/python benchmarks/bench_scale.py --load-only --sizes 20000 --compare-with /work/main

The data is made here (a TREC folder: run, topics, corpus, qrels) in a temporary folder.
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

import numpy as np

CANDIDATES = 100
PERMS = 20  # + the identity reference = 21 orders per query
CORPUS = 5000


def make_data(folder: Path, queries: int, seed: int = 0, candidates: int = CANDIDATES) -> Path:
    """``queries`` topics, each with ``candidates`` (100) BM25-like candidates from a shared
    corpus and two relevant documents among them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for d in range(CORPUS):
            out.write(json.dumps({"_id": f"d{d}", "text": f"passage {d}"}) + "\n")
    with (
        (folder / "topics.tsv").open("w") as topics,
        (folder / "run.trec").open("w") as run,
        (folder / "qrels.txt").open("w") as qrels,
    ):
        for q in range(queries):
            topics.write(f"q{q}\tquestion {q}\n")
            docs = rng.choice(CORPUS, size=candidates, replace=False)
            for rank, d in enumerate(docs, start=1):
                run.write(f"q{q} Q0 d{d} {rank} {candidates - rank + 1} synth\n")
            for d in rng.choice(docs, size=2, replace=False):
                qrels.write(f"q{q} 0 d{d} 1\n")
    return folder


def harness_run(
    args: list[str], pythonpath: str | None = None, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Run ``python -m harness run ARGS`` (with ``env`` added to this process's
    environment); (peak RSS in MB, wall seconds)."""
    env = os.environ | (env or {})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "harness", "run", *args],  # -P: PYTHONPATH, not the cwd
        env=env,
        cwd=pythonpath,  # ``-m`` puts the working folder first on the path: the other tree's
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"harness run {' '.join(args)} failed:\n{process.stderr.read().decode()}")
    return usage.ru_maxrss / 1024, seconds


def memory(sizes: list[int], work: Path, trees: dict[str, str | None], compare_max: int) -> None:
    print(f"peak RSS, identity reranker, {CANDIDATES} candidates x {PERMS + 1} orders per query")
    header = f"{'queries':>8} {'samples.jsonl':>14} " + " ".join(
        f"{name + ' ' + what:>22}" for name in trees for what in ("run", "resume")
    )
    print(header)
    for size in sizes:
        data = make_data(work / f"data{size}", size)
        cells, samples_mb = [], 0.0
        for name, tree in trees.items():
            if tree is not None and size > compare_max:
                cells += ["(not run)", "(not run)"]  # --compare-max: the old tree grows too much
                continue
            out = work / f"run-{name}-{size}"
            args = ["--reranker", "identity", "--dataset", str(data), "--perms", str(PERMS)]
            args += ["--queries", str(size), "--out", str(out)]
            for _ in ("run", "resume"):
                rss, seconds = harness_run(args, tree)
                cells.append(f"{rss:8.0f} MB {seconds:7.1f} s")
            samples_mb = (out / "samples.jsonl").stat().st_size / 1e6
        print(f"{size:>8} {samples_mb:>11.0f} MB " + " ".join(f"{c:>22}" for c in cells))


LOAD = """
import resource, sys, tracemalloc
from harness.data.trec import load_trec_dataset
folder, traced = sys.argv[1], sys.argv[2] == "traced"
if traced:
    tracemalloc.start()
files = [f"{folder}/{name}" for name in ("run.trec", "topics.tsv", "corpus.jsonl", "qrels.txt")]
dataset = load_trec_dataset(*files, name="synthetic")
if traced:
    print(tracemalloc.get_traced_memory()[1] / 1e6, dataset.fingerprint)
else:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, dataset.fingerprint)
"""


def load_only(sizes: list[int], work: Path, trees: dict[str, str | None]) -> None:
    """Peak memory of ``load_trec_dataset`` alone, each figure from a fresh process."""
    print(f"loading a TREC folder, {CANDIDATES} candidates per query: peak RSS / traced peak")
    print(f"{'queries':>8} " + " ".join(f"{name:>28}" for name in trees) + "  fingerprint")
    for size in sizes:
        data, cells, prints = make_data(work / f"data{size}", size), [], set()
        for tree in trees.values():
            env = os.environ | ({"PYTHONPATH": tree} if tree else {})
            figures = []
            for mode in ("rss", "traced"):
                out = subprocess.run(
                    [sys.executable, "-P", "-c", LOAD, str(data), mode],
                    env=env,
                    cwd=tree,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                figures.append(float(out[0]))
                prints.add(out[1])
            cells.append(f"{figures[0]:7.0f} MB RSS {figures[1]:7.0f} MB traced")
        same = prints.pop() if len(prints) == 1 else f"DIFFER: {sorted(prints)}"
        print(f"{size:>8} " + " ".join(f"{c:>28}" for c in cells) + f"  {same}")


def throughput(queries: int, work: Path, reranker: str) -> None:
    data = make_data(work / f"tdata{queries}", queries)
    rows = [("local", [])] + [(f"ray {n} worker(s)", ["--workers", str(n)]) for n in (1, 2)]
    print(f"\nthroughput, {reranker}, {queries} queries x {PERMS + 1} orders")
    print(f"{'executor':>14} {'queries/s':>10} {'orders/s':>10} {'vs local':>9}")
    base = None
    for name, extra in rows:
        out = work / f"t-{name.replace(' ', '_')}"
        args = ["--reranker", reranker, "--dataset", str(data), "--perms", str(PERMS)]
        args += ["--queries", str(queries), "--out", str(out)]
        args += ["--executor", "ray", *extra] if extra else []
        harness_run(args)
        results = json.loads((out / "results.json").read_text())
        rate = results["permutations"]["total_orders"] / results["wall_time_s"]
        per_query = results["dataset"]["queries_used"] / results["wall_time_s"]
        base = base or rate
        print(f"{name:>14} {per_query:>10.1f} {rate:>10.0f} {rate / base:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--compare-with", help="another checkout whose harness to measure too")
    parser.add_argument(
        "--compare-max",
        type=int,
        default=2000,
        help="measure --compare-with only up to this many queries (its memory grows with them)",
    )
    parser.add_argument("--throughput-queries", type=int, default=300)
    parser.add_argument("--reranker", default="identity", help="for the throughput part")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--load-only", action="store_true", help="only the loader's peak memory")
    args = parser.parse_args()
    trees: dict[str, str | None] = {"this": None}
    if args.compare_with:
        trees = {"before": str(Path(args.compare_with).resolve()), "this": None}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        if args.load_only:
            return load_only(args.sizes, Path(tmp), trees)
        if not args.skip_memory:
            memory(args.sizes, Path(tmp), trees, args.compare_max)
        if not args.skip_throughput:
            throughput(args.throughput_queries, Path(tmp), args.reranker)


if __name__ == "__main__":
    main()
