"""How close ``harness run --dry-run``'s time estimate comes to the real run's wall time.

For each reranker, in separate processes (so each pays its own imports and model load and
sets its own OpenMP wait policy, as a user's command does): ``harness run ... --dry-run``
(its printed estimate, and how long the dry run itself took), then the same ``harness run``
for real into a fresh folder (its wall time, and the reranking time ``results.json``
records). Printed per reranker: estimate, real wall time,
their ratio, and whether the dry run's prompt tokens equal the real run's recorded ones.

The machine's 1-minute load average is printed as each phase starts: on a shared machine
the probe and the real run may see different loads, and the ratio carries the difference
(the estimate assumes the load of its probe).

Usage::

    .venv/bin/python benchmarks/bench_dry_run.py --dataset msmarco-dl19 --queries 3 \\
        --depth 20 --perms 3 --rerankers invarirank first rankgpt
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_dry_run(text: str) -> dict[str, float]:
    """The numbers ``harness run --dry-run`` printed (its estimate read back from its text)."""
    numbers: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("dry run: "):
            numbers["orders"] = int(line.split()[2])
        for key in ("forward passes", "prompt tokens", "generated tokens"):
            if line.startswith(f"{key}: "):
                numbers[key.replace(" ", "_")] = int(line.split()[len(key.split())])
        if line.startswith("time: ~"):
            amount = re.match(r"time: ~((?:\d+ (?:h|min|s) ?)+)", line)
            units = {"h": 3600, "min": 60, "s": 1}
            pairs = re.findall(r"(\d+) (h|min|s)", amount[1])
            numbers["estimate_s"] = sum(int(n) * units[u] for n, u in pairs)
            numbers["basis"] = line.split("(", 1)[1].rstrip(")")
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="msmarco-dl19")
    parser.add_argument("--queries", default="3")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--perms", type=int, default=3)
    parser.add_argument("--rerankers", nargs="+", default=["invarirank", "first", "rankgpt"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    settings = {
        "dataset": args.dataset,
        "queries": args.queries,
        "depth": args.depth,
        "perms": args.perms,
        "device": args.device,
    }
    print(f"load average before: {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for reranker in args.rerankers:
            out = Path(scratch) / reranker
            load_dry = os.getloadavg()[0]
            command = [sys.executable, "-m", "harness", "run", "--reranker", reranker]
            for key, value in settings.items():
                command += [f"--{key.replace('_', '-')}", str(value)]
            command += ["--out", str(out)]
            started = time.perf_counter()  # as a user runs it: the CLI, its own process
            dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True)
            assert dry.returncode == 0, dry.stderr
            counted = {**parse_dry_run(dry.stdout), "dry_s": time.perf_counter() - started}
            assert not out.exists(), "a dry run wrote a run folder"
            load_real = os.getloadavg()[0]
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            real_s = time.perf_counter() - started
            results = json.loads((out / "results.json").read_text())
            samples = [
                json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()
            ]
            recorded = sum(s["facts"]["prompt_tokens"] for s in samples)
            reranking_s = results.get("wall_time_s")
            rows.append((reranker, counted, real_s, reranking_s, recorded, load_dry, load_real))
            print(
                f"{reranker}: estimate {counted['estimate_s']:.1f} s, real {real_s:.1f} s "
                f"({counted['basis']})",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")
    print()
    print(
        "| reranker | orders | passes | prompt tokens (dry / real) | generated (dry) "
        "| dry run took s | estimate s | real wall s | real reranking s | estimate / real "
        "| load at dry / real start |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for reranker, counted, real_s, reranking_s, recorded, load_dry, load_real in rows:
        print(
            f"| {reranker} | {counted['orders']} | {counted['forward_passes']} | "
            f"{counted['prompt_tokens']} / {recorded} | {counted['generated_tokens']} | "
            f"{counted['dry_s']:.1f} | {counted['estimate_s']:.1f} | {real_s:.1f} | "
            f"{reranking_s} | {counted['estimate_s'] / real_s:.2f} | {load_dry:.1f} / "
            f"{load_real:.1f} |"
        )


if __name__ == "__main__":
    main()
