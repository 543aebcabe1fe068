"""Bring a run folder of an older format to the current one, keeping every sample.

Format 1 folders lack ``queries.jsonl`` and per-order values, which only the dataset can
supply: the run's configuration is resolved again, its dataset reloaded and checked against
the recorded fingerprint, then ``run.json``, ``queries.jsonl`` and ``results.json`` are
rewritten from the samples already on disk. Nothing is reranked. The original provenance
(reranker preset and identity, environment, times) is kept as it was recorded.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.rerankers.preset import RerankerPreset
from harness.results.schema import FORMAT_VERSION, RunResults, format_of
from harness.results.store import IDENTITY_FILE, RESULTS_FILE, RUN_FILE, RunStore

UPGRADABLE = (1,)


def upgrade_run(run_dir: Path, dataset: str | None = None) -> RunResults:
    """Upgrade ``run_dir`` in place to the current format; returns its new results.

    ``dataset`` names the data where it is now, when it moved since the run (a card name or
    folder); its fingerprint must still match the recorded one.
    """
    from harness.runner import compute_results, prepare_run, save_results

    old = _read(run_dir / RESULTS_FILE, run_dir)
    version = format_of(old)
    if version == FORMAT_VERSION:
        raise HarnessError(f"{run_dir} is already in run format {FORMAT_VERSION}")
    if version not in UPGRADABLE:
        raise HarnessError(f"{run_dir}: run format {version!r} cannot be upgraded")
    try:
        config = RunConfig(**{**old["config"], "out": str(run_dir)})
        if dataset is not None:
            config = replace(config, dataset=dataset)
    except (KeyError, TypeError) as exc:
        raise HarnessError(f"{run_dir / RESULTS_FILE}: unreadable configuration ({exc})") from exc
    if config.perms is None:  # format 1 stored no perms for designs that ignore it
        config = replace(config, perms=RunConfig().perms)
    prepared = prepare_run(config.validate())
    recorded = old["dataset"].get("fingerprint")
    if prepared.header.dataset.fingerprint != recorded:
        raise HarnessError(
            f"{run_dir}: its dataset {config.dataset!r} changed since the run (fingerprint "
            f"{prepared.header.dataset.fingerprint}, recorded {recorded}); cannot upgrade"
        )
    reranker = {k: v for k, v in old["reranker"].items() if k not in ("identity",)}
    header = replace(
        prepared.header,
        config_hash=str(old["config_hash"]),
        reranker=RerankerPreset(**reranker),
        created=str(old.get("created", prepared.header.created)),
        run_notes=tuple(old.get("run_notes", ())),
    )
    prepared = replace(prepared, header=header)
    store = RunStore.open(run_dir, header, list(prepared.query_records()))
    samples = store.load_samples()
    identity = old["reranker"].get("identity") or store.read_json(IDENTITY_FILE)
    results = compute_results(
        prepared,
        samples,
        identity,
        environment=old.get("environment") or {},
        wall_time_s=float(old.get("wall_time_s", 0.0)),
        finished=str(old.get("finished", "")),
    )
    save_results(run_dir, results)
    return results


def _read(path: Path, run_dir: Path) -> dict[str, Any]:
    if not path.is_file():
        which = "an unfinished run" if (run_dir / RUN_FILE).is_file() else "not a run folder"
        raise HarnessError(f"{run_dir} is {which} (no {RESULTS_FILE}); nothing to upgrade")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path}: cannot read results ({exc})") from exc
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: not a harness results file")
    return data
