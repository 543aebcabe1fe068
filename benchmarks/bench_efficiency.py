"""How close each reranker runs to this machine's matmul rate, robust to a shared machine.

efficiency = the FLOPs the call needs ÷ (its time x the rate this machine reaches on the same
matmul shapes, with the same threads) = the time those matmuls alone take ÷ the call's time.
Above 1 is possible and reported as such (a backend may share work across orders).

* FLOPs needed: from the method's definition and the model's config (``flops_needed.py``),
  read off the requests the method makes on one untimed call: projections, MLP and attention
  over the (query, key) pairs the method's mask allows, for the tokens whose outputs the
  method reads (and those they attend to), plus the vocabulary projection where logits are
  read. Padding, blocked entries and unread tokens are not needed: a call that computes them
  shows it as lost efficiency. The FLOPs as run (every matmul torch runs, attention over the
  allowed entries; ``counted_flops``) are printed beside them.
* Reference: the needed work's own shapes — each pass's ``[tokens, K] @ [K, N]`` on the
  model's real weights (several layers' worth, so weights stream as in the model), the
  vocabulary projection's rows, attention's ``[q, d] @ [d, keys]`` batches — each timed (min
  of a few repetitions) in this process, with the same torch threads. Its time is Σ FLOPs of
  a shape ÷ its rate. Row counts are timed as they are, up to ``MAX_ROWS``.
* Samples alternate, reference then call, round-robin over all cells, ``--samples`` times.
  Both are timed in this process's CPU time (all its threads) as well as by the wall clock:
  on a shared machine the wall clock mostly measures the share of the cores the process got,
  CPU time the work it did. Each cell reports the MINIMUM call time (wall ms/order and CPU
  ms/order) and the efficiency = the minimum reference CPU time ÷ the minimum call CPU time,
  with the spread (min/median/max) of the per-sample ratio and the same ratio on wall-clock
  minima beside it. Other processes only ever slow a sample down, so minima agree across runs
  where means do not.
* Printed: load averages at start and end, torch threads, OMP/MKL environment and wait
  policy, CPU model and SIMD flags.

One model (SmolLM2-135M, fp32, CPU), the same candidate sets and shown orders (random) for
every method; each call takes ``--orders`` orders of one set (pointwise scores a set once for
all its orders, as in a run). Each call is a fresh reranker (nothing cached from before).

``--compare-with CHECKOUT`` prints the table before -> after in one run: one worker process
per checkout (``PYTHONPATH`` = the checkout, so each imports its own ``harness``; this script
drives both), every cell measured old, new, old, new … so that the machine's load hits both
sides alike.

Usage (``PYTHONPATH=.``: the checkout's ``harness``, not an installed one; the CPU-time
efficiency repeats within ±5% at a given load and drops up to ~15% under heavy load, see
docs/listwise.md)::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_efficiency.py --threads 1
    PYTHONPATH=. .venv/bin/python benchmarks/bench_efficiency.py --datasets msmarco-dl19 \\
        --orders 2 --methods invarirank-dense,invarirank --samples 5 --json eff.json
    git worktree add /tmp/old d15e31e
    .venv/bin/python benchmarks/bench_efficiency.py --compare-with /tmp/old --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flops_needed, beside this script

from flops_needed import ModelShape, Work, recorded_needs

METHODS = ("invarirank-dense", "invarirank", "lft", "pointwise", "first", "rankgpt")
DATASETS = ("movielens-100k", "msmarco-dl19")
ROOT = Path(__file__).resolve().parents[1]
REPLY = "@@bench "  # marks a worker's answer line; anything else it prints is passed through
MAX_ROWS = 4096  # rows of a timed reference matmul (the rate drops ~12% from 512 to 2,048 rows)
TIMED_FLOPS = 2e8  # per repetition of a reference shape: enough layers to reach it
REPETITIONS = 3  # of each reference shape per sample; the fastest counts
SIMD = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


@dataclass(frozen=True)
class Row:
    dataset: str
    method: str
    ms_per_order: float  # wall clock, the minimum over samples
    ms_spread: tuple[float, float, float]  # min, median, max
    cpu_ms_per_order: float  # CPU time of this process, the minimum over samples
    gflop_needed: float  # per order
    gflop_run: float  # per order, as torch ran it
    reference_gflops: float  # needed FLOPs ÷ the minimum reference CPU time
    efficiency: float  # minimum reference CPU time ÷ minimum call CPU time
    efficiency_spread: tuple[float, float, float]  # of the per-sample ratios
    wall_efficiency: float  # the same on wall-clock minima
    samples: int


@dataclass(frozen=True)
class Clock:
    """Seconds of wall clock and of this process's CPU time (all its threads)."""

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter(), time.process_time())

    def __sub__(self, other: Clock) -> Clock:
        return Clock(self.wall - other.wall, self.cpu - other.cpu)

    def __add__(self, other: Clock) -> Clock:
        return Clock(self.wall + other.wall, self.cpu + other.cpu)


@dataclass
class Cell:
    """One (dataset, method): its needed work, reference shapes and samples."""

    needed: float = 0.0  # FLOPs per call (all sets)
    run: float = 0.0
    shapes: dict[tuple[str, int, int], float] = field(default_factory=dict)  # shape -> FLOPs
    calls: list[Clock] = field(default_factory=list)  # per call (all sets)
    references: list[Clock] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--queries", type=int, default=1, help="sets timed per dataset")
    parser.add_argument("--depth", type=int, default=20, help="candidates per set")
    parser.add_argument("--orders", type=int, default=2, help="orders per call")
    parser.add_argument("--samples", type=int, default=5, help="alternating samples per cell")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and setting here")
    parser.add_argument(
        "--compare-with",
        metavar="CHECKOUT",
        help="a checkout of older code (e.g. `git worktree add /tmp/old <commit>`): each cell is "
        "measured in it and in this checkout, alternately, and printed before -> after",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {k: getattr(args, k) for k in ("model", "queries", "depth", "orders", "threads")}
    from harness.backends.threads import apply_wait_policy

    apply_wait_policy()  # before torch loads, as `harness run` does
    if args.serve:
        serve(Bench(**settings), sys.stdin, sys.stdout)
        return
    methods, datasets = args.methods.split(","), args.datasets.split(",")
    if args.compare_with:
        compare(Path(args.compare_with), settings, datasets, methods, args.samples)
        return
    bench = Bench(**settings)
    started = describe_machine()
    print(started["line"], flush=True)
    cells = [(d, m) for d in datasets for m in methods]
    for cell in cells:
        needed = bench.prepare(*cell).needed / 1e9
        print(f"  {' '.join(cell)}: {needed:.1f} GFLOP needed per call", flush=True)
    for index in range(args.samples):  # round-robin: a load change hits every cell alike
        for cell in cells:
            bench.sample(*cell)
        print(
            f"  sample {index + 1}/{args.samples} done, load {os.getloadavg()[0]:.1f}", flush=True
        )
    rows = [bench.row(*cell) for cell in cells]
    ended = describe_machine()
    report(rows, methods)
    print(f"\nload average at the end: {ended['load']}", flush=True)
    if args.json:
        facts = {"settings": settings, "samples": args.samples, "start": started, "end": ended}
        Path(args.json).write_text(json.dumps({**facts, "rows": [asdict(r) for r in rows]}))


def describe_machine() -> dict[str, Any]:
    """The load, the thread policy and the CPU, as one line and as facts."""
    import torch

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    env = {k: os.environ.get(k, "(unset)") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    cpu, flags = cpu_facts()
    facts = {
        "load": load,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": policy,
        **env,
        "cpu": cpu,
        "simd": flags,
        "torch": torch.__version__,
    }
    line = (
        f"load average {load} (1/5/15 min) on {os.cpu_count()} CPUs ({cpu}; {' '.join(flags)}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"OMP_WAIT_POLICY={policy}, " + ", ".join(f"{k}={v}" for k, v in env.items())
    )
    return {**facts, "line": line}


def cpu_facts() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cpu unknown", []
    model, flags = "cpu unknown", set()
    for line in text.splitlines():
        if line.startswith("model name") and model == "cpu unknown":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    return model, [f for f in SIMD if f in flags]


class Bench:
    """One model and the candidate sets and shown orders every method is timed on."""

    def __init__(self, model: str, queries: int, depth: int, orders: int, threads: int) -> None:
        import torch

        from harness.models.loading import load_model

        if threads:
            torch.set_num_threads(threads)
        self.loaded = load_model(model)
        self.model, self.queries, self.depth, self.orders = model, queries, depth, orders
        self.sets: dict[str, tuple[list[Any], list[np.ndarray]]] = {}
        self.cells: dict[tuple[str, str], Cell] = {}
        self.timer: Reference | None = None

    def _sets(self, dataset: str) -> tuple[list[Any], list[np.ndarray]]:
        if dataset not in self.sets:
            sets = candidate_sets(dataset, self.queries, self.depth)
            rng = np.random.default_rng(0)
            shown = [np.stack([rng.permutation(len(s)) for _ in range(self.orders)]) for s in sets]
            self.sets[dataset] = (sets, shown)
        return self.sets[dataset]

    def prepare(self, dataset: str, method: str) -> Cell:
        """One untimed call per set (it also warms the method up): the needed work from its
        requests, the FLOPs as run from torch's counter."""
        sets, shown = self._sets(dataset)
        cell = Cell()
        for cset, orders in zip(sets, shown, strict=True):
            reranker = build(method, self.loaded, self.orders)
            with recorded_needs(reranker.backend) as work, counted_flops() as counter:
                reranker.rerank(cset, orders)
            shape = ModelShape.of(self.loaded.model)  # after the method added its tokens
            cell.needed += work.flops(shape)["total"]
            cell.run += counter.total()
            for key, flops in reference_shapes(work, shape).items():
                cell.shapes[key] = cell.shapes.get(key, 0.0) + flops
        if self.timer is None:
            self.timer = Reference(self.loaded.model)
        self.cells[dataset, method] = cell
        return cell

    def sample(self, dataset: str, method: str) -> None:
        """The reference time of the cell's shapes, then one timed call per set."""
        cell = self.cells.get((dataset, method)) or self.prepare(dataset, method)
        assert self.timer is not None
        cell.references.append(self.timer.seconds(cell.shapes))
        sets, shown = self._sets(dataset)
        total = Clock(0.0, 0.0)
        for cset, orders in zip(sets, shown, strict=True):
            reranker = build(method, self.loaded, self.orders)  # nothing cached from before
            started = Clock.now()
            reranker.rerank(cset, orders)
            total += Clock.now() - started
        cell.calls.append(total)

    def row(self, dataset: str, method: str) -> Row:
        cell = self.cells[dataset, method]
        orders = self.orders * len(self._sets(dataset)[0])
        ms = [1000.0 * t.wall / orders for t in cell.calls]
        cpu = [t.cpu for t in cell.calls]
        ratios = [r.cpu / t.cpu for r, t in zip(cell.references, cell.calls, strict=True)]
        reference = min(r.cpu for r in cell.references)
        return Row(
            dataset=dataset,
            method=method,
            ms_per_order=min(ms),
            ms_spread=spread(ms),
            cpu_ms_per_order=1000.0 * min(cpu) / orders,
            gflop_needed=cell.needed / orders / 1e9,
            gflop_run=cell.run / orders / 1e9,
            reference_gflops=cell.needed / reference / 1e9,
            efficiency=reference / min(cpu),
            efficiency_spread=spread(ratios),
            wall_efficiency=min(r.wall for r in cell.references) / min(ms) * 1000.0 / orders,
            samples=len(cell.calls),
        )


def spread(values: list[float]) -> tuple[float, float, float]:
    return (min(values), statistics.median(values), max(values))


def bucket(value: float) -> int:
    """``value`` to two significant digits: passes of nearly equal shape share a timing."""
    if value < 100:
        return max(round(value), 1)
    scale = 10 ** (len(str(int(value))) - 2)
    return int(round(value / scale) * scale)


def reference_shapes(work: Work, shape: ModelShape) -> dict[tuple[str, int, int], float]:
    """FLOPs of the needed work by matmul shape: ``("linear", rows, 0)`` (every layer's
    weights), ``("head", rows, 0)`` (the vocabulary projection), ``("attention", queries per
    group, keys per query)``."""
    shapes: dict[tuple[str, int, int], float] = {}

    def add(key: tuple[str, int, int], flops: float) -> None:
        shapes[key] = shapes.get(key, 0.0) + flops

    for p in work.passes:
        if p.tokens:
            add(("linear", bucket(p.tokens), 0), p.tokens * shape.linear_per_token)
            add(
                ("attention", bucket(p.tokens / p.groups), bucket(p.keys / p.tokens)),
                p.keys * shape.attention_per_key,
            )
        if p.head_rows:
            add(("head", bucket(p.head_rows), 0), p.head_rows * shape.head_per_row)
    return shapes


class Reference:
    """Times matmul shapes on the model's own weights, with the process's torch threads."""

    def __init__(self, model: Any) -> None:
        import torch

        self.layers = [
            [m.weight for m in layer.modules() if isinstance(m, torch.nn.Linear)]
            for layer in decoder_layers(model)
        ]
        self.head = model.get_output_embeddings().weight
        self.shape = ModelShape.of(model)
        self.warm: set[tuple[str, int, int]] = set()

    def seconds(self, shapes: dict[tuple[str, int, int], float]) -> Clock:
        """Σ FLOPs of each shape ÷ the rate measured for it now (fastest of a few runs), in
        wall clock and in CPU time."""
        total = Clock(0.0, 0.0)
        for key, flops in shapes.items():
            done, best = self.rate(*key)
            total += Clock(flops / done * best.wall, flops / done * best.cpu)
        return total

    def rate(self, kind: str, a: int, b: int) -> tuple[float, Clock]:
        """(FLOPs of one run, its fastest wall and CPU time) of this shape."""
        import torch
        import torch.nn.functional as F

        rows = min(a, MAX_ROWS)
        if kind == "linear":
            per_layer = 2.0 * rows * sum(k * n for k, n in self.shape.layer_weights())
            count = int(min(max(TIMED_FLOPS // per_layer, 1), len(self.layers)))
            weights = [w for layer in self.layers[:count] for w in layer]
            inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
            flops = count * per_layer

            def run() -> None:
                for w in weights:
                    F.linear(inputs[w.shape[1]], w)

        elif kind == "head":
            x = torch.randn(rows, self.head.shape[1])
            flops = 2.0 * rows * self.head.shape[0] * self.head.shape[1]

            def run() -> None:
                F.linear(x, self.head)

        else:  # attention: [batch, q, d] @ [batch, d, k], then [batch, q, k] @ [batch, k, d]
            d = self.shape.head_dim
            batch = int(min(max(TIMED_FLOPS // (4.0 * a * b * d), 1), 64 * self.shape.heads))
            q, k, v = torch.randn(batch, a, d), torch.randn(batch, d, b), torch.randn(batch, b, d)
            flops = 4.0 * batch * a * b * d

            def run() -> None:
                torch.bmm(torch.bmm(q, k), v)

        with torch.inference_mode():
            if (kind, a, b) not in self.warm:
                run()
                self.warm.add((kind, a, b))
            wall = cpu = float("inf")
            for _ in range(REPETITIONS):
                started = Clock.now()
                run()
                took = Clock.now() - started
                wall, cpu = min(wall, took.wall), min(cpu, took.cpu)
        return flops, Clock(wall, cpu)


def decoder_layers(model: Any) -> list[Any]:
    """The decoder's layer modules (``model.model.layers`` in Llama-style models)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h"):
        found = model
        for part in path.split("."):
            found = getattr(found, part, None)
        if found is not None:
            return list(found)
    raise SystemExit(f"no decoder layers found in {type(model).__name__}")


def serve(bench: Bench, requests: IO[str], replies: IO[str]) -> None:
    """Answer ``{"dataset", "method"}`` lines with one more sample of that cell and its row
    so far (``--compare-with`` runs one such worker per checkout, so each imports its own
    ``harness``)."""
    import harness

    hello = {"harness": str(Path(harness.__file__).parent), "describe": describe_machine()["line"]}
    replies.write(REPLY + json.dumps(hello) + "\n")
    replies.flush()
    for line in requests:
        ask = json.loads(line)
        bench.sample(ask["dataset"], ask["method"])
        row = bench.row(ask["dataset"], ask["method"])
        replies.write(REPLY + json.dumps(asdict(row)) + "\n")
        replies.flush()


class Worker:
    """A ``--serve`` process importing ``harness`` from ``checkout``."""

    def __init__(self, checkout: Path, settings: dict[str, Any]) -> None:
        flags = [f"--{k}={v}" for k, v in settings.items()]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=checkout,
        )
        self.hello = self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
            sys.stderr.write(line)
        raise SystemExit(f"bench worker exited with {self.process.wait()}")

    def ask(self, dataset: str, method: str) -> Row:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"dataset": dataset, "method": method}) + "\n")
        self.process.stdin.flush()
        return Row(**self._reply())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


def compare(
    old: Path, settings: dict[str, Any], datasets: list[str], methods: list[str], samples: int
) -> None:
    """Every cell sampled in the old checkout and in this one, alternately (old, new, old,
    new …), so that a change in the machine's load hits both sides alike."""
    sides = {"before": Worker(old.resolve(), settings), "after": Worker(ROOT, settings)}
    for side, worker in sides.items():
        print(
            f"{side}: {commit_of(Path(worker.hello['harness']).parent)} "
            f"({worker.hello['harness']}); {worker.hello['describe']}"
        )
    rows: dict[str, list[Row]] = {"before": [], "after": []}
    try:
        for name in datasets:
            for method in methods:
                for _ in range(samples):
                    got = {side: worker.ask(name, method) for side, worker in sides.items()}
                for side, row in got.items():
                    rows[side].append(row)
                print(
                    f"  {name} {method}: {got['before'].cpu_ms_per_order:.0f} -> "
                    f"{got['after'].cpu_ms_per_order:.0f} CPU ms/order",
                    flush=True,
                )
    finally:
        for worker in sides.values():
            worker.close()
    report_compare(rows["before"], rows["after"], methods)


def commit_of(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()[:72] or "(not a git checkout)"


def candidate_sets(name: str, count: int, depth: int) -> list[Any]:
    from harness.data.registry import load_dataset, resolve_card, select

    sets = select(load_dataset(resolve_card(name)), queries=count, depth=depth).sets
    return list(sets)


def build(method: str, loaded: Any, batch: int) -> Any:
    """A fresh reranker (own backend and prefix cache) on the shared weights.

    Code from before the segments route has no ``attention`` setting: there both InvariRank
    rows run its only route, the dense mask."""
    import dataclasses

    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.methods.invarirank import CausalListwiseReranker, InvariRankReranker
    from harness.rerankers.methods.pointwise import PointwiseReranker
    from harness.rerankers.methods.rankgpt import RankGPTReranker
    from harness.rerankers.params import FirstParams, MarkerParams, RankGPTParams

    context = RunContext(batch_size=batch)
    backend = TransformersBackend(loaded)
    words = {"max_candidate_words": 100}
    routes = {f.name for f in dataclasses.fields(MarkerParams)}
    dense = MarkerParams(attention="dense") if "attention" in routes else MarkerParams()
    made: dict[str, Callable[[], Any]] = {
        "invarirank-dense": lambda: InvariRankReranker(method, context, backend, dense),
        "invarirank": lambda: InvariRankReranker(method, context, backend, MarkerParams()),
        "lft": lambda: CausalListwiseReranker(method, context, backend, MarkerParams()),
        "pointwise": lambda: PointwiseReranker(method, context, backend),
        "first": lambda: FirstReranker(method, context, backend, FirstParams(**words)),
        "rankgpt": lambda: RankGPTReranker(method, context, backend, RankGPTParams(**words)),
    }
    return made[method]()


def matmul_rate(size: int = 576, rows: int = 512, seconds: float = 1.0) -> float:
    """FLOP/s of one fp32 matmul shaped like SmolLM2's MLP input ([rows, 576] x [576, 1536]);
    ``bench_decoding.py``'s quick rate (this benchmark times the call's own shapes)."""
    import torch

    a, b = torch.randn(rows, size), torch.randn(size, 1536)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2.0 * rows * size * 1536 * count / (time.perf_counter() - started)


class FlopTally:
    def __init__(self, mode: Any) -> None:
        self.mode = mode
        self.attention = 0.0

    def total(self) -> float:
        counts = self.mode.get_flop_counts().get("Global", {})
        matmuls = sum(v for op, v in counts.items() if "attention" not in str(op))
        return float(matmuls) + self.attention


@contextmanager
def counted_flops() -> Iterator[FlopTally]:
    """FLOPs as run: every matmul from torch's counter (padding included), attention over the
    entries the mask allows at each ``scaled_dot_product_attention`` call."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    tally = FlopTally(mode)
    real = F.scaled_dot_product_attention

    def counting(query: Any, key: Any, value: Any, attn_mask: Any = None, **kw: Any) -> Any:
        batch, heads, q_len, dim = query.shape
        k_len = key.shape[-2]
        if attn_mask is None:
            offset = k_len - q_len
            per_head = (
                q_len * offset + q_len * (q_len + 1) // 2 if kw.get("is_causal") else q_len * k_len
            )
            allowed = float(batch * heads * per_head)
        else:
            if attn_mask.dtype == torch.bool:
                ok = attn_mask
            else:
                ok = attn_mask > torch.finfo(attn_mask.dtype).min / 2
            ok = ok.expand(batch, ok.shape[1], q_len, k_len)
            allowed = float(ok.sum()) * heads / ok.shape[1]
        tally.attention += 4.0 * dim * allowed
        return real(query, key, value, attn_mask=attn_mask, **kw)

    F.scaled_dot_product_attention = counting
    try:
        with mode:
            yield tally
    finally:
        F.scaled_dot_product_attention = real


def report(rows: list[Row], methods: list[str]) -> None:
    """Per cell: ms/order (wall: min; min/median/max), CPU ms/order (min), GFLOP/order needed
    and as run, the reference rate, efficiency (CPU min ÷ min; per-sample min/median/max) and
    the wall-clock efficiency beside it."""
    print()
    print(
        "| dataset | reranker | ms/order | wall min / median / max | CPU ms/order | "
        "GFLOP/order needed | as run | reference GFLOP/s | efficiency | "
        "per-sample min / median / max | wall efficiency |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.dataset} | {r.method} | {r.ms_per_order:.0f} | "
            f"{' / '.join(f'{v:.0f}' for v in r.ms_spread)} | {r.cpu_ms_per_order:.0f} | "
            f"{r.gflop_needed:.1f} | {r.gflop_run:.1f} | {r.reference_gflops:.1f} | "
            f"{r.efficiency:.2f} | {' / '.join(f'{v:.2f}' for v in r.efficiency_spread)} | "
            f"{r.wall_efficiency:.2f} |"
        )
    by = {(r.dataset, r.method): r for r in rows}
    print_segments_ratio(by, list(dict.fromkeys(r.dataset for r in rows)), methods, "")


def print_segments_ratio(by: dict, datasets: list[str], methods: list[str], label: str) -> None:
    """Per dataset, how much faster the segments route is than the dense-mask reference."""
    if "invarirank" not in methods or "invarirank-dense" not in methods:
        return
    print()
    for d in datasets:
        dense, sparse = by[d, "invarirank-dense"], by[d, "invarirank"]
        cpu = dense.cpu_ms_per_order / sparse.cpu_ms_per_order
        print(
            f"{d}{label}: invarirank segments vs dense mask: {cpu:.2f}x less CPU time per "
            f"order ({dense.ms_per_order / sparse.ms_per_order:.2f}x wall clock; minima)"
        )


def report_compare(before: list[Row], after: list[Row], methods: list[str]) -> None:
    """The issue's table: CPU ms/order and efficiency per reranker and dataset, before ->
    after (minima over the samples)."""
    old = {(r.dataset, r.method): r for r in before}
    new = {(r.dataset, r.method): r for r in after}
    datasets = list(dict.fromkeys(r.dataset for r in after))
    print()
    print("| reranker |" + "".join(f" {d} CPU ms/order | efficiency |" for d in datasets))
    print("|---|" + "---:|---:|" * len(datasets))
    for method in methods:
        cells = "".join(
            f" {old[d, method].cpu_ms_per_order:.0f} -> {new[d, method].cpu_ms_per_order:.0f} "
            f"({old[d, method].cpu_ms_per_order / new[d, method].cpu_ms_per_order:.2f}x) |"
            f" {old[d, method].efficiency:.2f} -> {new[d, method].efficiency:.2f} |"
            for d in datasets
        )
        print(f"| {method} |{cells}")
    print_segments_ratio(new, datasets, methods, " (after)")


if __name__ == "__main__":
    main()
