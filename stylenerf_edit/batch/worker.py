"""The worker side of a batch: prepare, invert and edit one mini-batch of photos, and hand the files back.

:func:`process_batch` runs in the driver's own process, in a spawned local process or as a Ray task. It never
writes under the output folder: each photo's files are made in a private scratch folder and returned as bytes,
so the driver alone decides what lands in the output tree and the manifest, and a lost, killed or retried
worker cannot leave anything behind there.

A photo that fails (unreadable, no face, out of memory, NaN loss, ...) comes back with a one-line reason; the
others are unaffected. When a whole mini-batch fails (a NaN or an out-of-memory error stops every photo of it),
each photo is tried again on its own, so only the culprits fail.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from stylenerf_edit.directions.direction import Direction
from stylenerf_edit.editing.edit import Edit, edit_latent
from stylenerf_edit.editing.outputs import write_edit_outputs
from stylenerf_edit.errors import StyleNerfEditError, one_line
from stylenerf_edit.generator.checkpoint import GeneratorInfo, load_with_info, resolve_device
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.invert.latent import load_latent
from stylenerf_edit.invert.lpips import LPIPS
from stylenerf_edit.invert.optimize import invert
# The single-photo writer and the optimisation-video recorder of `invert` are reused so that both commands
# write identical files.
from stylenerf_edit.invert.pipeline import (InvertOptions, PreparedPhoto, VideoRecorder, estimate_cameras,
                                            prepare_photo, tune_photo, write_photo_outputs)
from stylenerf_edit.invert.pti import carry_tuning, tuned_for_latent, tuning_beside


@dataclass(frozen=True)
class BatchEdit:
    """One ``--edit``: a direction and its strength, written to ``edits/<folder>/``."""

    folder: str
    direction: Direction
    strength: float


@dataclass(frozen=True)
class WorkerJob:
    """What every mini-batch of a run shares."""

    network: str
    invert: InvertOptions
    edits: tuple[BatchEdit, ...] = ()
    yaws: tuple[float, ...] = (-30.0, -15.0, 0.0, 15.0, 30.0)   # columns of each edit's before/after sheet


@dataclass(frozen=True)
class PhotoTask:
    """One photo of a mini-batch."""

    path: str          # relative to the input folder: the manifest key
    source: str        # the file the worker reads
    out_dir: str       # relative to the output folder


@dataclass
class PhotoResult:
    """A photo's files (relative name -> bytes) or the reason it failed."""

    path: str
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0        # this photo's own time: reading, its share of the joint optimisation, its files
    worker: str = ""            # host:pid:device


def failure_reason(error: BaseException, source: str | Path | None = None) -> str:
    """A one-line reason for the manifest: the message without the photo's own path in front, the exception's
    type for unexpected errors, and what to do for out-of-memory errors."""
    text = one_line(error)
    if source is not None and text.startswith(f"{source}: "):
        text = text[len(f"{source}: "):]
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return f"out of memory ({text}); lower --batch-size or use fewer --workers per device"
    return text if isinstance(error, StyleNerfEditError) else f"{type(error).__name__}: {text}"


@functools.lru_cache(maxsize=1)
def _loaded(network: str, device: str, lpips_net: str) -> tuple[Generator, GeneratorInfo, LPIPS]:
    """The generator and LPIPS of a worker process, kept across its mini-batches (a 1024 px model takes
    seconds to load)."""
    G, info = load_with_info(network, device=device)
    return G, info, LPIPS(lpips_net, device=G.device)


def release_models() -> None:
    """Drop the models :func:`process_batch` keeps in this process."""
    _loaded.cache_clear()


# Progress of a mini-batch in the driver's own process: ("a.png, b.png step 20/300", fraction of it done).
StepCallback = Callable[[str, float], None]


def _read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _invert_and_render(G: Generator, info: GeneratorInfo, lpips: LPIPS, items: list[tuple[PhotoTask, PreparedPhoto]],
                       job: WorkerJob, on_step: StepCallback | None = None
                       ) -> tuple[dict[str, dict[str, bytes]], dict[str, float]]:
    """Invert ``items`` together and make every photo's files; raises if any step fails for any photo.
    Returns each photo's files and seconds (its share of the joint optimisation, plus its own tuning and files)."""
    options, batch = job.invert, [p for _, p in items]
    names = ", ".join(Path(t.path).name for t, _ in items)
    steps, pti_steps = options.config.steps, options.pti.steps if options.pti is not None else 0
    work = len(items) * (steps + pti_steps)
    if options.camera is not None:
        yaw, pitch = options.camera
        initial = [(G.camera_prior.frontal().with_(yaw=yaw, pitch=pitch), "given")] * len(batch)
    else:
        initial = estimate_cameras(G, job.network, batch, options.pose, lpips)
    targets = torch.stack([p.target for p in batch])
    recorder = VideoRecorder(targets, steps, options.video_frames) if options.save_video else None

    def step_done(step: int, terms: dict, images: torch.Tensor) -> None:
        if recorder is not None:
            recorder(step, images)
        if on_step is not None:
            on_step(f"{names} step {step + 1}/{steps}", len(items) * (step + 1) / work)

    t0 = time.perf_counter()
    results = invert(G, targets.to(G.device), [c for c, _ in initial], lpips, options.config, callback=step_done)
    shared = (time.perf_counter() - t0) / len(batch)
    files, seconds = {}, {}
    for k, ((task, prepared), result) in enumerate(zip(items, results)):
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="stylenerf-batch-") as scratch:
            root = Path(scratch)
            frames = recorder.frames[k] if recorder is not None else None
            write_photo_outputs(result, prepared, root, info, initial[k], options, shared, frames)
            if options.pti is not None:
                def tuning_step(step: int, terms: dict, name: str = Path(task.path).name,
                                base: int = len(items) * steps + k * pti_steps) -> None:
                    if on_step is not None:
                        on_step(f"{name} tuning step {step + 1}/{pti_steps}", (base + step + 1) / work)

                tune_photo(G, info, result, prepared, root, lpips, options.pti, callback=tuning_step)
            if job.edits:
                original = load_latent(root / "latent.npz", generator=info)
                tuned = tuned_for_latent(G, root / "latent.npz", original, info.weights_sha256)
                tuning = tuning_beside(root / "latent.npz")
                for e in job.edits:
                    edited = carry_tuning(edit_latent(original, [Edit(e.direction, e.strength)]), tuning)
                    write_edit_outputs(tuned, original, edited, root / "edits" / e.folder, yaws=job.yaws, tuning=tuning)
            files[task.path] = _read_tree(root)
        seconds[task.path] = shared + time.perf_counter() - t1
    return files, seconds


def _release_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def process_batch(tasks: Sequence[PhotoTask], job: WorkerJob, device: str | None = None,
                  threads: int | None = None, on_step: StepCallback | None = None) -> list[PhotoResult]:
    """Process one mini-batch on ``device`` (None/"auto": CUDA when present) with ``threads`` CPU threads (None:
    leave torch's setting); one result per task, in order. ``on_step`` follows the optimisation (in-process only)."""
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    worker = f"{socket.gethostname()}:{os.getpid()}:{dev}"
    G, info, lpips = _loaded(job.network, str(dev), job.invert.lpips_net)
    errors: dict[str, str] = {}
    seconds = {t.path: 0.0 for t in tasks}
    prepared: list[tuple[PhotoTask, PreparedPhoto]] = []
    options = job.invert
    for task in tasks:
        t0 = time.perf_counter()
        try:
            prepared.append((task, prepare_photo(task.source, G.img_resolution, aligned=options.aligned,
                                                 face_index=options.face_index, landmarks=options.landmarks)))
        except Exception as e:   # any failure of one photo is that photo's outcome, never the run's
            errors[task.path] = failure_reason(e, task.source)
        seconds[task.path] += time.perf_counter() - t0
    files: dict[str, dict[str, bytes]] = {}
    groups = [prepared] if prepared else []
    while groups:
        group = groups.pop(0)
        t0 = time.perf_counter()
        try:
            made, took = _invert_and_render(G, info, lpips, group, job, on_step)
        except Exception as e:
            _release_device_memory(dev)
            for task, _ in group:      # the failed attempt's time is shared by the photos it held
                seconds[task.path] += (time.perf_counter() - t0) / len(group)
            if len(group) > 1:
                groups += [[item] for item in group]
            else:
                errors[group[0][0].path] = failure_reason(e, group[0][0].source)
        else:
            files.update(made)
            for path, t in took.items():
                seconds[path] += t
    return [PhotoResult(t.path, files.get(t.path, {}), errors.get(t.path), seconds[t.path], worker) for t in tasks]
