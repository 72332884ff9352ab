"""How torch shares the CPU cores: its thread count and OpenMP's wait policy.

With OpenMP's default policy, a thread that finishes its share of an operation spins for a while before it
sleeps. Alone on a machine that saves a wake-up; when two processes share the cores, the spinning threads burn
the time the other process needs. ``PASSIVE`` makes them sleep at once. bench/shared_cores.py measured both on
this project's 2-core CPU (a 10-step inversion, process start included): alone 13.7 s with the default policy,
18.6 s with PASSIVE; two at once 40.0 s and 22.6 s; with one thread each 20.8 s alone and 19.1 s for two at once.
Alone is the common case, so the CLI keeps the runtime's default and ``--threads 1`` (or ``OMP_WAIT_POLICY=PASSIVE``)
is what to use on a shared machine. A policy is read when torch starts its OpenMP runtime, so it must be set
before torch runs any parallel work: :func:`configure_threads` does so when given one.
"""

from __future__ import annotations

import os

def configure_threads(threads: int | None = None, wait_policy: str | None = None) -> None:
    """Use ``threads`` CPU threads (None: torch's default, one per core) and, unless the environment says
    otherwise, OpenMP's ``wait_policy`` (None: leave it)."""
    if wait_policy:
        os.environ.setdefault("OMP_WAIT_POLICY", wait_policy)
    if threads:
        import torch

        torch.set_num_threads(threads)
