"""A pre-rendered, seeded training set for the distillation: rendered once, read back every epoch.

At 128 px the exact targets cost a third of a CPU training step, so they are rendered once into
``<run>/trainset/`` and reused. The set is split into chunks of ``chunk`` samples; chunk ``i`` depends
only on (seed, i, resolution, world), so any process may render any chunk and the result is the same
file. Each chunk is written under a temporary name and renamed (readers never see a partial chunk);
a ``.lock`` file marks a chunk being rendered, so that a second process (``--render-set``), working from
the last chunk down while the trainer reads from the first up, does not duplicate its work. Images and masks are stored as uint8 (the quantisation,
at most 1/255 of the range, is far below the model's error) and read back memory-mapped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import atomic_path, write_text

# (z [n, 512], code [n, 32], world [n, 4, 4], intr [n, 4, 4]) -> {"img", "mask", optionally "parts"} as floats
Renderer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
Sampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
STALE_LOCK_S = 300.0   # a lock older than this belongs to a process that died: the chunk is rendered again


class TrainingSetError(StyleNerfEditError):
    """A run's training set does not match the run that wants to read it."""


@dataclass
class SetSpec:
    """What fixes the set's contents: a different spec is a different set."""

    seed: int
    size: int
    chunk: int
    resolution: int
    world: int

    @property
    def chunks(self) -> int:
        return self.size // self.chunk


class TrainingSet:
    """Sample ``i`` of epoch 0 is sample ``i`` of the set; later epochs read the set in a seeded permutation."""

    def __init__(self, root: Path, spec: SetSpec, sampler: Sampler, render: Renderer, render_batch: int = 16):
        if spec.size < spec.chunk or spec.size % spec.chunk:
            raise TrainingSetError(f"training set size {spec.size} must be a positive multiple of its chunk "
                                   f"size {spec.chunk}")
        self.root, self.spec, self.sampler, self.render, self.render_batch = root, spec, sampler, render, render_batch
        root.mkdir(parents=True, exist_ok=True)
        meta = root / "set.json"
        if meta.is_file():
            found = json.loads(meta.read_text())
            if found != asdict(spec):
                raise TrainingSetError(f"{meta}: this set was rendered with {found}, the run asks for {asdict(spec)}; "
                                       f"remove {root} or use the run's own settings")
        else:
            write_text(meta, json.dumps(asdict(spec)) + "\n")
        self._open: dict[int, dict[str, torch.Tensor]] = {}

    def path(self, i: int) -> Path:
        return self.root / f"chunk_{i:05d}.pt"

    def render_chunk(self, i: int) -> None:
        """Render chunk ``i`` and write it atomically (its own seeded generator: independent of the caller)."""
        gen = torch.Generator().manual_seed(self.spec.seed * 1_000_003 + i)
        z, code, world, intr = self.sampler(self.spec.chunk, gen)
        parts: dict[str, list[torch.Tensor]] = {}
        for s in range(0, self.spec.chunk, self.render_batch):
            sl = slice(s, s + self.render_batch)
            for name, value in self.render(z[sl], code[sl], world[sl], intr[sl]).items():
                parts.setdefault(name, []).append(value.cpu())
        data = {"z": z.cpu(), "code": code.cpu(), "world": world.cpu(), "intr": intr.cpu()}
        for name, values in parts.items():
            v = torch.cat(values)
            if name == "img":   # [-1, 1] -> [0, 1]
                v = (v + 1) / 2
            data[name] = (v.clamp(0, 1) * 255).round().to(torch.uint8)
        with atomic_path(self.path(i)) as tmp:
            torch.save(data, tmp)

    def _claim(self, i: int) -> bool:
        """Take the lock of chunk ``i``; False when another live process holds it."""
        lock = self.path(i).with_suffix(".lock")
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
                    lock.unlink(missing_ok=True)
                    return self._claim(i)
            except FileNotFoundError:
                return self._claim(i)
            return False

    def ensure(self, i: int, wait: bool) -> bool:
        """Make chunk ``i`` exist; returns whether it does.

        ``wait`` (the trainer): render it now even if another process is already at it, never waiting on a
        process that may be starved of CPU (both write the same file). Otherwise (the worker): skip it.
        """
        if self.path(i).is_file():
            return True
        claimed = self._claim(i)
        if not claimed and not wait:
            return False
        try:
            self.render_chunk(i)
        finally:
            if claimed:
                self.path(i).with_suffix(".lock").unlink(missing_ok=True)
        return True

    def render_all(self, progress: Callable[[int], None] = lambda i: None) -> None:
        """Render every chunk nobody has rendered or is rendering, last first: the trainer reads the set from
        the first chunk on, so the two meet once, in the middle (the ``--render-set`` worker)."""
        for i in reversed(range(self.spec.chunks)):
            if self.ensure(i, wait=False):
                progress(i)

    def _chunk(self, i: int) -> dict[str, torch.Tensor]:
        if i not in self._open:
            self.ensure(i, wait=True)
            try:
                self._open[i] = torch.load(self.path(i), map_location="cpu", weights_only=True, mmap=True)
            except (RuntimeError, EOFError, OSError) as error:
                raise TrainingSetError(f"{self.path(i)}: unreadable chunk ({error}); delete it and it will be "
                                       "rendered again") from None
        return self._open[i]

    def indices(self, start: int, n: int) -> torch.Tensor:
        """Set indices of the samples at global positions ``start .. start+n-1`` (epochs concatenated)."""
        size = self.spec.size
        pos = torch.arange(start, start + n)
        epoch, offset = pos // size, pos % size
        out = offset.clone()
        for e in epoch.unique().tolist():
            if e > 0:
                perm = torch.randperm(size, generator=torch.Generator().manual_seed(self.spec.seed * 7919 + e))
                sel = epoch == e
                out[sel] = perm[offset[sel]]
        return out

    def batch(self, start: int, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The ``n`` samples from global position ``start`` on, as float tensors on ``device``."""
        rows: dict[str, list[torch.Tensor]] = {}
        for index in self.indices(start, n).tolist():
            chunk = self._chunk(index // self.spec.chunk)
            for name, value in chunk.items():
                rows.setdefault(name, []).append(value[index % self.spec.chunk])
        out = {}
        for name, values in rows.items():
            v = torch.stack(values).to(device)
            if v.dtype == torch.uint8:
                v = v.float() / 255
                if name == "img":
                    v = v * 2 - 1
            out[name] = v
        return out
