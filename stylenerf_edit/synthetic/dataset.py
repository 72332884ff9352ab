"""Procedural "photos" with ground truth: what ``stylenerf-edit synth`` writes.

Each sample ``NNNNNN`` is ``NNNNNN.png`` plus ``NNNNNN.json`` with the head parameters, the camera (user
units and the official camera-to-world matrix), the background colour, the latent seed and, with
``depth=True``, ``NNNNNN_depth.npy`` (camera depth, 0 on the background). Sample i of a seed is always the
same head at the same camera, whatever ``n`` is, and :func:`sample_latents` gives back the generator
latent (z, background code) it was drawn from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stylenerf_edit import __version__
from stylenerf_edit.files import atomic_path, write_text
from stylenerf_edit.generator.camera import Camera, CameraPrior, stack_cameras
from stylenerf_edit.images import save_png, to_uint8

from .params import BACKGROUND_CODE_SCALE, background_from_code, head_params_from_z
from .renderer import DEFAULT_WORLD, render_heads

SCHEMA_VERSION = 1
Z_DIM, CODE_DIM = 512, 32


@dataclass
class SynthSample:
    """Ground truth of one procedural photo (also the JSON written beside it)."""

    index: int
    seed: int
    params: dict[str, float]
    camera: dict[str, float]
    world_mat: list[list[float]]
    background: list[float]
    resolution: int
    world: int = 1                  # version of the procedural world (``render_heads(..., world=)``)
    schema_version: int = SCHEMA_VERSION
    tool_version: str = __version__


def sample_latents(seed: int, index: int) -> tuple[torch.Tensor, torch.Tensor, Camera]:
    """The z [512], background code [32] and prior camera of sample ``index`` of ``seed``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    z = torch.randn(Z_DIM, generator=g)
    code = torch.randn(CODE_DIM, generator=g) * BACKGROUND_CODE_SCALE
    camera = CameraPrior().sample(1, g)[0]
    return z, code, camera


def synthesize(n: int, out_dir: str | Path, resolution: int = 256, seed: int = 0, depth: bool = False,
               batch_size: int = 16, start: int = 0, world: int = DEFAULT_WORLD) -> list[SynthSample]:
    """Write samples ``start .. start+n-1`` of ``seed`` of procedural world ``world`` into ``out_dir``; returns
    their ground truth."""
    if n < 1 or resolution < 8:
        raise ValueError("need n >= 1 and resolution >= 8")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples: list[SynthSample] = []
    for first in range(start, start + n, batch_size):
        idx = list(range(first, min(first + batch_size, start + n)))
        drawn = [sample_latents(seed, i) for i in idx]
        z = torch.stack([d[0] for d in drawn])
        code = torch.stack([d[1] for d in drawn])
        cameras = [d[2] for d in drawn]
        params = head_params_from_z(z)
        background = background_from_code(code)
        world_mat, intr = stack_cameras(cameras)
        render = render_heads(params, world_mat, intr, resolution, background, world=world)
        images = to_uint8(render.image)
        for j, i in enumerate(idx):
            stem = f"{i:06d}"
            save_png(images[j], out / f"{stem}.png")
            if depth:
                with atomic_path(out / f"{stem}_depth.npy") as tmp, open(tmp, "wb") as f:
                    np.save(f, render.depth[j, 0].numpy().astype(np.float32))
            sample = SynthSample(index=i, seed=seed, params=params.index(j), camera=asdict(cameras[j]),
                                 world_mat=world_mat[j].tolist(), background=background[j].tolist(),
                                 resolution=resolution, world=world)
            write_text(out / f"{stem}.json", json.dumps(asdict(sample), indent=1) + "\n")
            samples.append(sample)
    return samples



def demo_photos() -> list[Path]:
    """The procedural photos shipped with the package (``stylenerf-edit synth --n 4 --res 256 --seed 2026``)."""
    return sorted((Path(__file__).resolve().parent / "samples").glob("*.png"))
