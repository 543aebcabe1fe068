"""Bring a run folder of an older format to the current one, keeping every sample.

Format 1 folders lack ``queries.jsonl`` and per-order values, which only the dataset can
supply: the run's data is loaded again (from where the run found it, or from where the user
says it is now), checked against the recorded fingerprint and query ids, then ``run.json``,
``queries.jsonl`` and ``results.json`` are rewritten from the samples already on disk.
Nothing is reranked and no preset file is needed: the recorded configuration, preset,
identity, dataset record, environment and times are kept as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.rerankers.preset import RerankerPreset
from harness.results.lock import run_folder_lock
from harness.results.schema import (
    FORMAT_VERSION,
    DatasetRecord,
    PermutationRecord,
    RunHeader,
    RunResults,
    format_of,
)
from harness.results.store import IDENTITY_FILE, RESULTS_FILE, RunStore, read_results_data

UPGRADABLE = (1,)


def upgrade_run(run_dir: Path, dataset: str | None = None) -> RunResults:
    """Upgrade ``run_dir`` in place to the current format; returns its new results.

    ``dataset`` names the data where it is now, when it moved since the run (a card name or
    folder); its fingerprint and query ids must still match the recorded ones.
    """
    path = run_dir / RESULTS_FILE
    old = read_results_data(run_dir)
    version = format_of(old)
    if version == FORMAT_VERSION:
        raise HarnessError(f"{run_dir} is already in run format {FORMAT_VERSION}")
    if version not in UPGRADABLE:
        raise HarnessError(f"{run_dir}: run format {version!r} cannot be upgraded")
    header, identity, config = _recorded(old, path)
    if dataset is not None:
        config = replace(config, dataset=dataset)
    with run_folder_lock(run_dir):  # a run resuming the folder must not write it meanwhile
        return _upgrade(run_dir, old, header, identity, config)


def _upgrade(
    run_dir: Path,
    old: Mapping[str, Any],
    header: RunHeader,
    identity: Mapping[str, Any],
    config: RunConfig,
) -> RunResults:
    """Check the data against the recorded run, then rewrite the folder (locked)."""
    from harness.runner import compute_results, prepare_run, save_results

    prepared = prepare_run(replace(config, out=str(run_dir)).validate(), preset=header.reranker)
    found = prepared.header.dataset
    if found.fingerprint != header.dataset.fingerprint:
        raise HarnessError(
            f"{run_dir}: the data at {config.dataset!r} is not the run's (fingerprint "
            f"{found.fingerprint}, recorded {header.dataset.fingerprint}); cannot upgrade"
        )
    if found.query_ids != header.dataset.query_ids:
        raise HarnessError(
            f"{run_dir}: the run's query selection differs from the recorded one "
            f"({len(found.query_ids)} vs {len(header.dataset.query_ids)} queries); cannot upgrade"
        )
    prepared = replace(prepared, header=header)
    store = RunStore.open(run_dir, header.config_hash)
    store.write_header(header, prepared.query_records())
    results = compute_results(
        prepared,
        store.scan_samples(),
        identity or store.read_json(IDENTITY_FILE),
        environment=old.get("environment") or {},
        wall_time_s=float(old.get("wall_time_s") or 0.0),
        finished=str(old.get("finished", "")),
    )
    save_results(run_dir, results)
    return results


def _recorded(
    old: Mapping[str, Any], where: Path
) -> tuple[RunHeader, Mapping[str, Any], RunConfig]:
    """The format-1 header as typed records, the reranker's identity and the run's config."""
    try:
        reranker = dict(old["reranker"])
        identity = reranker.pop("identity", None) or {}
        config = dict(old["config"])
        if config.get("perms") is None:  # format 1 stored none for designs that ignore it
            config["perms"] = RunConfig().perms
        header = RunHeader(
            config_hash=str(old["config_hash"]),
            config=dict(old["config"]),
            reranker=RerankerPreset(**reranker),
            dataset=DatasetRecord(
                **{**old["dataset"], "query_ids": tuple(old["dataset"]["query_ids"])}
            ),
            permutations=PermutationRecord(**old["permutations"]),
            created=str(old.get("created", "")),
            run_notes=tuple(old.get("run_notes", ())),
        )
        return header, identity, RunConfig(**config)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HarnessError(f"{where}: unreadable format-1 results ({exc})") from exc
