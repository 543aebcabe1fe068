"""``--model``: run a preset on another model without copying its YAML.

``ORG/NAME@REV`` sets the preset's ``model`` and ``revision`` params; a ``.gguf`` file, a
model folder or an embedded name sets ``model`` alone (a path is never split at ``@``). The
overridden preset is what the run records, so provenance and the config hash name the model
actually used.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.errors import HarnessError
from harness.rerankers.preset import RerankerPreset


def with_model(preset: RerankerPreset, model: str) -> RerankerPreset:
    """``preset`` with its model replaced; an error for a reranker that loads no model."""
    from harness.rerankers.registry import adapter_class, backend_of

    value = model.strip()
    if not value:
        raise HarnessError("--model is empty; pass ORG/NAME[@REVISION], a .gguf file or a folder")
    toolkit = getattr(adapter_class(preset), "toolkit", None)  # a toolkit loads its own model
    if backend_of(preset) is None and toolkit is None:
        raise HarnessError(
            f"--model {value}: {preset.where} loads no model of its own (adapter "
            f"{preset.adapter!r}); for a meta-reranker set the model in its inner preset"
        )
    params = dict(preset.params)
    name, revision = split_revision(value)
    if toolkit is not None and revision is not None:
        raise HarnessError(
            f"--model {value}: the {toolkit} toolkit takes no revision; pass a folder or a name"
        )
    params["model"] = name
    if revision is not None:
        params["revision"] = revision
    elif "revision" in params and name != preset.params.get("model"):
        del params["revision"]  # the preset's revision belongs to the preset's model
    return replace(preset, params=params)


def split_revision(value: str) -> tuple[str, str | None]:
    """``("org/name", "rev")`` for ``org/name@rev``; paths and plain names whole."""
    if value.endswith(".gguf") or Path(value).exists() or "@" not in value:
        return value, None
    name, _, revision = value.rpartition("@")
    if not name or not revision:
        raise HarnessError(f"--model {value!r}: expected ORG/NAME@REVISION")
    return name, revision
