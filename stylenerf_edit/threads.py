"""How torch shares the CPU cores: its thread count and OpenMP's wait policy.

With OpenMP's default policy, a thread that finishes its share of an operation spins for a while before it
sleeps. Alone on a machine that saves a wake-up; when two processes share the cores, the spinning threads burn
the time the other process needs (bench/shared_cores.py measures it). ``PASSIVE`` makes them sleep at once. The
policy is read when torch starts its OpenMP runtime, so it must be set before torch runs any parallel work: the
CLI does so first thing.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"


def configure_threads(threads: int | None = None, wait_policy: str | None = WAIT_POLICY) -> None:
    """Use ``threads`` CPU threads (None: torch's default, one per core) and, unless the environment says
    otherwise, OpenMP's ``wait_policy`` (None: leave it)."""
    if wait_policy:
        os.environ.setdefault("OMP_WAIT_POLICY", wait_policy)
    if threads:
        import torch

        torch.set_num_threads(threads)
