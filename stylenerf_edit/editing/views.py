"""New viewpoints: camera sweeps and grids, and batched rendering of a latent through them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.network import Generator

from stylenerf_edit.images import contact_sheet, pingpong, save_png, to_uint8, write_gif, write_mp4


def yaw_sweep(frames: int = 24, max_yaw: float = 30.0, pitch: float = 0.0, base: Camera | None = None) -> list[Camera]:
    """``frames`` cameras with yaw evenly from -max_yaw to +max_yaw degrees at a fixed pitch."""
    if frames < 2:
        raise ValueError("a sweep needs at least 2 frames")
    base = base or Camera()
    return [base.with_(yaw=float(y), pitch=pitch) for y in np.linspace(-max_yaw, max_yaw, frames)]


def view_grid(yaws: Sequence[float], pitches: Sequence[float], base: Camera | None = None) -> list[Camera]:
    """Row-major grid: one row per pitch (top row = highest pitch), one column per yaw."""
    base = base or Camera()
    return [base.with_(yaw=float(y), pitch=float(p)) for p in sorted(pitches, reverse=True) for y in yaws]


def latent_from_seed(G: Generator, seed: int, truncation_psi: float = 0.7, truncation_cutoff: int | None = None,
                     bg_scale: float = 0.65) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed -> (ws [1, num_ws, w_dim], background code [1, bg_code_dim]).

    z is ``numpy.random.RandomState(seed).randn(512)``, the first latent the official ``generate.py`` draws for
    the seed; the background code comes from ``torch.Generator().manual_seed(seed)`` scaled by ``bg_scale``.
    """
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.cfg.z_dim)).float().to(G.device)
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    return ws, G.sample_bg_code(1, torch.Generator().manual_seed(seed), scale=bg_scale)


@torch.no_grad()
def render_views(G: Generator, ws: torch.Tensor, bg_code: torch.Tensor, cameras: Sequence[Camera],
                 batch_size: int = 4, hierarchical: bool = True) -> np.ndarray:
    """One latent (ws [1, num_ws, w_dim], bg_code [1, D]) through every camera -> [N, H, W, 3] uint8."""
    assert ws.shape[0] == 1 and bg_code.shape[0] == 1, "render_views takes a single latent"
    out = []
    for i in range(0, len(cameras), batch_size):
        chunk = list(cameras[i:i + batch_size])
        n = len(chunk)
        img = G.synthesize(ws.expand(n, -1, -1), chunk, bg_code.expand(n, -1), hierarchical=hierarchical).img
        out.append(to_uint8(img))
    return np.concatenate(out)


@dataclass
class RenderResult:
    """Files written for one seed."""

    seed: int
    files: list[Path] = field(default_factory=list)


def render_seed(G: Generator, seed: int, out_dir: str | Path, truncation_psi: float = 0.7,
                camera: Camera | None = None, sweep: bool = False, sweep_frames: int = 24, max_yaw: float = 30.0,
                fps: float = 24.0, batch_size: int = 4) -> RenderResult:
    """Render one seed: a still (``seed0007.png``), or with ``sweep`` a yaw sweep as a contact strip PNG,
    a looping GIF and an MP4 (``seed0007_sweep.{png,gif,mp4}``)."""
    out = Path(out_dir)
    ws, bg = latent_from_seed(G, seed, truncation_psi)
    result = RenderResult(seed)
    stem = f"seed{seed:04d}"
    if not sweep:
        frame = render_views(G, ws, bg, [camera or G.camera_prior.frontal()], batch_size)[0]
        result.files.append(save_png(frame, out / f"{stem}.png"))
        return result
    base = camera or G.camera_prior.frontal()
    frames = render_views(G, ws, bg, yaw_sweep(sweep_frames, max_yaw, base.pitch, base), batch_size)
    strip = contact_sheet(list(frames[:: max(1, len(frames) // 7)]))
    loop = pingpong(list(frames))
    result.files += [save_png(strip, out / f"{stem}_sweep.png"), write_gif(loop, out / f"{stem}_sweep.gif", fps),
                     write_mp4(loop, out / f"{stem}_sweep.mp4", fps)]
    return result
