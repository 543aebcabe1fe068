"""Export a run's rerankings as TREC run files, so trec_eval, ranx and ir_measures read them.

One file per order index (``order-000.trec`` is the identity/first-stage order): every query
that was shown that order contributes its output ranking. Scores are ``n - rank``, strictly
decreasing, so no tool's tie-breaking can reorder a ranking. Beside them: ``qrels.txt`` (the
run's judgments, TREC format) and ``orders.tsv`` (which order each query saw in each file).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.files import ensure_writable_folder, write_text_atomic
from harness.results.store import Sample, iter_samples, read_queries

QRELS_FILE = "qrels.txt"
ORDERS_FILE = "orders.tsv"


@dataclass(frozen=True)
class TrecExport:
    folder: Path
    run_files: tuple[Path, ...]
    qrels: Path
    orders: Path


def run_file_name(order_index: int) -> str:
    return f"order-{order_index:03d}.trec"


def trec_lines(sample: Sample, tag: str) -> list[str]:
    """``qid Q0 docid rank score tag`` for one output ranking, best first."""
    for name in (sample.query_id, *sample.ranking):
        if not name or re.search(r"\s", name):
            raise HarnessError(
                f"query {sample.query_id!r}: id {name!r} contains whitespace, which a TREC run "
                "file cannot hold"
            )
    n = len(sample.ranking)
    return [
        f"{sample.query_id} Q0 {doc_id} {rank} {n - rank + 1} {tag}"
        for rank, doc_id in enumerate(sample.ranking, start=1)
    ]


def export_trec(run_dir: Path, out_dir: Path, reranker: str) -> TrecExport:
    """Write one TREC run file per order index of ``run_dir``, plus qrels and an index."""
    if out_dir.is_file():
        raise HarnessError(f"--trec {out_dir}: is a file, expected a folder for the TREC export")
    ensure_writable_folder(out_dir, "the TREC export")
    queries = read_queries(run_dir)
    by_order: dict[int, list[Sample]] = defaultdict(list)
    for sample in iter_samples(run_dir):
        by_order[sample.order_index].append(sample)
    tag = re.sub(r"\s+", "_", reranker) or "harness"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        index = ["query_id\torder_index\tlabel\tfile"]
        for order_index in sorted(by_order):
            samples = sorted(by_order[order_index], key=lambda s: s.query_id)
            lines = [line for s in samples for line in trec_lines(s, f"{tag}.o{order_index}")]
            path = out_dir / run_file_name(order_index)
            write_text_atomic(path, "\n".join(lines) + "\n")
            files.append(path)
            index += [f"{s.query_id}\t{order_index}\t{s.label}\t{path.name}" for s in samples]
        qrels = [
            f"{q.query_id} 0 {doc_id} {grade}"
            for q in queries.values()
            for doc_id, grade in sorted(q.qrels.items())
        ]
        write_text_atomic(out_dir / QRELS_FILE, "\n".join(qrels) + "\n")
        write_text_atomic(out_dir / ORDERS_FILE, "\n".join(index) + "\n")
    except OSError as exc:
        raise HarnessError(f"cannot write the TREC export to {out_dir}: {exc.strerror}") from exc
    return TrecExport(out_dir, tuple(files), out_dir / QRELS_FILE, out_dir / ORDERS_FILE)
