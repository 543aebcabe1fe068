"""Which queries a run reranks: ``--queries N`` (the first N), a list of ids, or a seeded
random sample.

* ``N``: the first N queries in the dataset's order (what earlier runs recorded).
* ``id1,id2,...``: exactly these query ids, in the dataset's order.
* ``@FILE``: the ids in FILE, one per line (blank lines and ``#`` comments ignored).
* ``random:K``: K queries drawn without replacement from every rerankable query, seeded by
  sha256(seed, "queries") (never Python's ``hash``), kept in the dataset's order; the same
  seed draws the same queries on any machine.

Unknown or repeated ids are one-line errors naming the id (and the file and line).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness.data.compact import set_query_ids, take_sets
from harness.data.model import Dataset
from harness.errors import HarnessError, shorten


@dataclass(frozen=True)
class QuerySelection:
    """A parsed ``--queries`` value other than a plain count."""

    text: str  # as given, recorded in the configuration
    ids: tuple[tuple[str, str], ...] = ()  # (id, where it was given) for lists and files
    sample: int | None = None

    @classmethod
    def parse(cls, text: str) -> QuerySelection:
        value = text.strip()
        if value.startswith("random:"):
            size = value.removeprefix("random:")
            if not size.isdigit() or int(size) < 1:
                raise HarnessError(f"--queries {text!r}: random:K needs a whole number K >= 1")
            return cls(value, sample=int(size))
        if value.startswith("@"):
            return cls(value, ids=_read_ids(Path(value[1:])))
        ids = [part.strip() for part in value.split(",")]
        if not value or any(not part for part in ids):
            raise HarnessError(
                f"--queries {text!r}: expected N, id1,id2,..., @FILE or random:K (an empty id)"
            )
        return cls(value, ids=tuple((qid, f"--queries item {k + 1}") for k, qid in enumerate(ids)))

    @property
    def tag(self) -> str:
        """Short and file-name safe, for the default run folder name."""
        if self.sample is not None:
            return f"random{self.sample}"
        if self.text.startswith("@"):
            return Path(self.text[1:]).stem
        digest = hashlib.sha256("\n".join(qid for qid, _ in self.ids).encode()).hexdigest()
        return f"{len(self.ids)}ids-{digest[:8]}"

    def apply(self, dataset: Dataset, seed: int) -> Dataset:
        """The dataset with only the selected sets, in the dataset's own order."""
        available = set_query_ids(dataset.sets)
        if self.sample is not None:
            chosen = set(_draw(available, self.sample, seed))
        else:
            known = set(available)
            seen: dict[str, str] = {}
            for qid, where in self.ids:
                if qid in seen:
                    raise HarnessError(
                        f"{where}: query {shorten(qid, quote=True)} is listed twice ({seen[qid]})"
                    )
                if qid not in known:
                    examples = ", ".join(shorten(q) for q in available[:3])
                    raise HarnessError(
                        f"{where}: no rerankable query {shorten(qid, quote=True)} in dataset "
                        f"{dataset.name!r} ({len(known)} queries, e.g. {examples})"
                    )
                seen[qid] = where
            chosen = set(seen)
        keep = [k for k, qid in enumerate(available) if qid in chosen]
        return replace(dataset, sets=take_sets(dataset.sets, keep))


def _draw(available: list[str], size: int, seed: int) -> list[str]:
    if size > len(available):
        raise HarnessError(
            f"--queries random:{size}: the dataset has only {len(available)} rerankable queries"
        )
    digest = hashlib.sha256(f"{seed}\x1fqueries".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    picked = rng.choice(len(available), size=size, replace=False)
    return [available[int(i)] for i in picked]


def _read_ids(path: Path) -> tuple[tuple[str, str], ...]:
    if not path.is_file():
        raise HarnessError(f"--queries @{path}: no such file")
    ids = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        if re.search(r"\s", value):
            raise HarnessError(
                f"{path}:{number}: one query id per line, got {shorten(value, quote=True)}"
            )
        ids.append((value, f"{path}:{number}"))
    if not ids:
        raise HarnessError(f"{path}: lists no query ids")
    return tuple(ids)
