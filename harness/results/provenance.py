"""Facts that make a run reproducible: versions, platform, and the source revision."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "harness-rerank",
    "numpy",
    "scipy",
    "pandas",
    "ranx",
    "numba",
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "ftfy",
    "peft",
    "vllm",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can move the numbers (read from metadata)."""
    versions: dict[str, str] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def source_revision() -> dict[str, Any] | None:
    """Git commit of the harness checkout, if it runs from one, and whether it is dirty."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = bool(_git(root, "status", "--porcelain"))  # untracked modules count too
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": dirty}


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "source": source_revision(),
        "accelerators": _accelerators(),
    }


def _accelerators() -> list[str]:
    """CUDA devices visible to torch, if torch is already loaded (a GPU run changes numbers)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    cuda = f"CUDA {torch.version.cuda}"
    return [f"{torch.cuda.get_device_name(i)} ({cuda})" for i in range(torch.cuda.device_count())]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=5
    )
    return result.stdout.strip()
