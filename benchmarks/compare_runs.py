"""Compare two run folders of the same configuration order by order (e.g. FIRST on
transformers against FIRST over HTTP on llama.cpp, same queries, depth and orders).

Usage::

    .venv/bin/python benchmarks/compare_runs.py runs/first-transformers runs/first-http

Prints, over the (query, order) pairs both runs have: how many rankings are identical, how
many agree on the top candidate, and the mean Kendall tau between them. With depth equal to
the window size each order is ONE window, so identical rankings are agreeing windows.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scipy.stats import kendalltau

from harness.results.store import iter_samples


def main() -> None:
    left, right = ({s.key: s.ranking for s in iter_samples(Path(arg))} for arg in sys.argv[1:3])
    shared = sorted(left.keys() & right.keys())
    same = sum(left[k] == right[k] for k in shared)
    top1 = sum(left[k][0] == right[k][0] for k in shared)
    taus = []
    for key in shared:
        position = {doc: i for i, doc in enumerate(right[key])}
        taus.append(kendalltau(range(len(left[key])), [position[d] for d in left[key]])[0])
    print(f"orders compared: {len(shared)}")
    print(f"identical rankings: {same}/{len(shared)}")
    print(f"same top candidate: {top1}/{len(shared)}")
    print(f"mean Kendall tau: {sum(taus) / len(taus):.3f}")


if __name__ == "__main__":
    main()
