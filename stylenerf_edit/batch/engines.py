"""Where mini-batches run: in this process, in spawned local worker processes, or as Ray tasks.

Every engine is a generator: it calls ``dispatch(batch)`` just before a mini-batch is handed out (the driver
marks its photos running) and yields each mini-batch's results as it finishes, in completion order. The driver
consumes them and alone writes outputs and the manifest.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

import torch

from stylenerf_edit.errors import StyleNerfEditError, one_line
from stylenerf_edit.generator.checkpoint import resolve_device

from .worker import PhotoResult, PhotoTask, StepCallback, WorkerJob, process_batch, release_models

ENGINES = ("local", "ray")
RAY_INSTALL = "pip install 'ray>=2.9'"
RAY_TASK_RETRIES = 3          # re-runs of a task whose worker process or node died

Batch = Sequence[PhotoTask]
Dispatch = Callable[[Batch], None]


class EngineError(StyleNerfEditError):
    """An engine cannot start (bad device list, Ray missing or unreachable)."""


def _failed(batch: Batch, reason: str) -> list[PhotoResult]:
    return [PhotoResult(t.path, error=reason) for t in batch]


def local_devices(workers: int, device: str | None) -> list[str]:
    """One device per local worker: ``auto`` spreads them round robin over the CUDA GPUs (else all on the CPU);
    a comma-separated list (``cuda:0,cuda:1``) is used round robin."""
    if device in (None, "auto"):
        gpus = torch.cuda.device_count()
        return [f"cuda:{i % gpus}" for i in range(workers)] if gpus else ["cpu"] * workers
    listed = [d.strip() for d in device.split(",") if d.strip()]
    if not listed:
        raise EngineError(f"--device {device!r}: expected auto, cpu, cuda, cuda:1 or a list like cuda:0,cuda:1")
    for d in listed:
        resolve_device(d)
    return [listed[i % len(listed)] for i in range(workers)]


def run_local(batches: Sequence[Batch], job: WorkerJob, dispatch: Dispatch, workers: int = 1,
              device: str | None = None, on_step: StepCallback | None = None) -> Iterator[list[PhotoResult]]:
    """Run the mini-batches here (one worker) or in ``workers`` spawned processes, one device each (the devices
    are checked at once). CPU workers share the cores: each gets ``cpu_count // workers`` threads. Spawned
    processes import the caller's main module, so a script needs the ``if __name__ == "__main__":`` guard.
    ``on_step`` follows each mini-batch's optimisation when it runs here (one worker)."""
    devices = local_devices(workers, device)
    if workers == 1:
        return _run_here(batches, job, dispatch, devices[0], on_step)
    threads = [None if d.startswith("cuda") else max(1, (os.cpu_count() or 1) // workers) for d in devices]
    return _run_pool(batches, job, dispatch, devices, threads)


def _run_here(batches: Sequence[Batch], job: WorkerJob, dispatch: Dispatch, device: str,
              on_step: StepCallback | None) -> Iterator[list[PhotoResult]]:
    try:
        for batch in batches:
            dispatch(batch)
            yield process_batch(batch, job, device, on_step=on_step)
    finally:
        release_models()


def _run_pool(batches: Sequence[Batch], job: WorkerJob, dispatch: Dispatch, devices: list[str],
              threads: list[int | None]) -> Iterator[list[PhotoResult]]:
    """One single-process executor per device slot, one mini-batch in flight on each, so a crashed process is
    blamed on exactly the mini-batch it was running. That mini-batch is retried photo by photo; a photo whose
    process dies on its own is recorded as failed. A crashed process is replaced."""
    context = multiprocessing.get_context("spawn")   # CUDA cannot be used in forked children

    def executor() -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=1, mp_context=context)

    slots = [executor() for _ in devices]
    queue = deque(batches)
    running: dict[cf.Future, tuple[int, Batch]] = {}
    try:
        while queue or running:
            busy = {slot for slot, _ in running.values()}
            for slot in range(len(slots)):
                if queue and slot not in busy:
                    batch = queue.popleft()
                    dispatch(batch)
                    future = slots[slot].submit(process_batch, batch, job, devices[slot], threads[slot])
                    running[future] = (slot, batch)
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                slot, batch = running.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    slots[slot].shutdown(wait=False, cancel_futures=True)
                    slots[slot] = executor()
                    if len(batch) > 1:
                        queue.extendleft([t] for t in reversed(batch))
                    else:
                        yield _failed(batch, "the worker process died while processing this photo (crash or "
                                             "killed for lack of memory)")
    finally:
        for pool in slots:
            pool.shutdown(wait=True, cancel_futures=True)


def require_ray() -> Any:
    """The ``ray`` module, or an :class:`EngineError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EngineError(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def run_ray(batches: Sequence[Batch], job: WorkerJob, dispatch: Dispatch, workers: int | None = None,
            address: str | None = None, device: str | None = None) -> Iterator[list[PhotoResult]]:
    """One Ray task per mini-batch, ``workers`` in flight (default: the cluster's GPUs, else its CPUs).

    Uses the Ray instance this process is already connected to, else connects to ``address`` (None: a running
    local cluster or ``RAY_ADDRESS``, else a new local instance); only an instance started here is shut down.
    Each task asks for one GPU when the cluster has any and is re-run up to ``RAY_TASK_RETRIES`` times when its
    worker dies. Workers need this package installed, and the photos and the network readable at the same paths.
    """
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EngineError(f"cannot connect to Ray at {address or 'the default address'} ({one_line(e)}); "
                              "check --address, or leave it out to start a local instance") from None
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
        remote = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=RAY_TASK_RETRIES)(process_batch)
        slots = workers or max(1, gpus or int(resources.get("CPU", 1)))
        job_ref = ray.put(job)   # shipped once, not with every task
        queue = deque(batches)
        running: dict[Any, Batch] = {}      # ObjectRef -> its mini-batch
        while queue or running:
            while queue and len(running) < slots:
                batch = queue.popleft()
                dispatch(batch)
                # Threads: one per task on CPUs, as the task reserves one CPU.
                running[remote.remote(list(batch), job_ref, device, None if gpus else 1)] = batch
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                batch = running.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as e:
                    results = _failed(batch, f"the Ray task failed ({one_line(e)[:300]})")
                yield results
    finally:
        if started:
            ray.shutdown()
