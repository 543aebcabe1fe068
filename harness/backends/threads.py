"""How torch's OpenMP threads wait between operations: chosen per run, overridable.

OpenMP threads either spin (``OMP_WAIT_POLICY=ACTIVE``) or sleep (``PASSIVE``) between
parallel regions. Measured on a 2-core CPU with SmolLM2-135M (issue 19): on an idle machine
spinning made the small matrix multiplies of decoding 1.3-2.3x faster; when other processes
share the cores, spinning threads stall each other and torch ran ~10x slower. So the run
spins only when the machine looks idle at start-up (1-minute load average under
``IDLE_LOAD`` per core) and sleeps otherwise. The variable must be set before torch loads
its OpenMP runtime, so the CLI applies it first thing; a value already in the environment
(``OMP_WAIT_POLICY=ACTIVE harness run …``) always wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

IDLE_LOAD = 0.25  # load average per core under which the machine counts as idle


def wait_policy(load: float, cpus: int) -> str:
    """``ACTIVE`` on an idle machine, ``PASSIVE`` when others compete for the cores."""
    return "ACTIVE" if load < IDLE_LOAD * max(cpus, 1) else "PASSIVE"


def apply_wait_policy(environ: MutableMapping[str, str] | None = None) -> str:
    """Set ``OMP_WAIT_POLICY`` unless it is set; returns the policy in effect."""
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" not in env:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average (some platforms): assume a shared machine
            load = float("inf")
        env["OMP_WAIT_POLICY"] = wait_policy(load, os.cpu_count() or 1)
    return env["OMP_WAIT_POLICY"]
