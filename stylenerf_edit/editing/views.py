"""New viewpoints: camera sweeps and grids, batched rendering of a latent through them, and the files ``render``
writes for a seed or an inverted latent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import load_with_info, resolve_device
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.images import contact_sheet, pingpong, save_png, to_uint8, write_gif, write_mp4
from stylenerf_edit.invert.latent import load_latent
from stylenerf_edit.invert.pti import tuned_for_latent
from stylenerf_edit.names import safe_name


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
                 batch_size: int = 4, hierarchical: bool = True, max_resolution: int | None = None) -> np.ndarray:
    """One latent (ws [1, num_ws, w_dim], bg_code [1, D]) through every camera -> [N, H, W, 3] uint8 (H = W =
    ``max_resolution`` for a preview that stops the upsampler there, see ``SynthesisNetwork.forward``)."""
    assert ws.shape[0] == 1 and bg_code.shape[0] == 1, "render_views takes a single latent"
    out = []
    for i in range(0, len(cameras), batch_size):
        chunk = list(cameras[i:i + batch_size])
        n = len(chunk)
        img = G.synthesize(ws.expand(n, -1, -1), chunk, bg_code.expand(n, -1), hierarchical=hierarchical,
                           max_resolution=max_resolution).img
        out.append(to_uint8(img))
    return np.concatenate(out)


@dataclass
class RenderResult:
    """Files written for one seed or latent."""

    name: str
    files: list[Path] = field(default_factory=list)


def parse_views(spec: str) -> list[float]:
    """Angles in degrees: ``"-30:30:7"`` (7 evenly from -30 to 30), ``"-20,0,20"`` or ``"15"``."""
    try:
        if ":" in spec:
            lo, hi, n = spec.split(":")
            if int(n) < 1:
                raise ValueError
            return [float(v) for v in np.linspace(float(lo), float(hi), int(n))]
        return [float(v) for v in spec.split(",")]
    except ValueError:
        raise StyleNerfEditError(f"views {spec!r}: expected START:STOP:COUNT (e.g. -30:30:7) or a list like "
                                 "-20,0,20 (degrees)") from None


def write_views(G: Generator, ws: torch.Tensor, bg_code: torch.Tensor, name: str, out_dir: str | Path,
                camera: Camera, yaws: Sequence[float] | None = None, sweep: bool = False, sweep_frames: int = 24,
                max_yaw: float = 30.0, fps: float = 24.0, batch_size: int = 4) -> RenderResult:
    """Render one latent (ws [1, num_ws, w_dim], bg_code [1, D]) and write it as ``name``:

    * at ``camera`` (``yaws`` None): ``NAME.png``;
    * at each of several ``yaws`` (``camera``'s pitch): ``NAME_yaw+15.png`` per view and ``NAME_views.png``, a strip;
    * with ``sweep``: a yaw sweep from -max_yaw to +max_yaw at ``camera``'s pitch as a contact strip, a looping
      GIF and an MP4 (``NAME_sweep.{png,gif,mp4}``).
    """
    if sweep and yaws is not None:
        raise ValueError("a sweep sets the yaws itself; give yaws or sweep, not both")
    out = Path(out_dir)
    result = RenderResult(name)
    if sweep:
        frames = render_views(G, ws, bg_code, yaw_sweep(sweep_frames, max_yaw, camera.pitch, camera), batch_size)
        strip = contact_sheet(list(frames[:: max(1, len(frames) // 7)]))
        loop = pingpong(list(frames))
        result.files += [save_png(strip, out / f"{name}_sweep.png"), write_gif(loop, out / f"{name}_sweep.gif", fps),
                         write_mp4(loop, out / f"{name}_sweep.mp4", fps)]
    elif yaws is None or len(yaws) == 1:
        view = camera if yaws is None else camera.with_(yaw=float(yaws[0]))
        result.files.append(save_png(render_views(G, ws, bg_code, [view], batch_size)[0], out / f"{name}.png"))
    else:
        frames = render_views(G, ws, bg_code, [camera.with_(yaw=float(y)) for y in yaws], batch_size)
        result.files += [save_png(f, out / f"{name}_yaw{y:+g}.png") for f, y in zip(frames, yaws)]
        result.files.append(save_png(contact_sheet(list(frames), columns=len(frames)), out / f"{name}_views.png"))
    return result


def render_seed(G: Generator, seed: int, out_dir: str | Path, truncation_psi: float = 0.7,
                camera: Camera | None = None, yaws: Sequence[float] | None = None, sweep: bool = False,
                sweep_frames: int = 24, max_yaw: float = 30.0, fps: float = 24.0, batch_size: int = 4) -> RenderResult:
    """Render one seed as ``seed0007`` (see :func:`write_views`; default camera: the prior's frontal one)."""
    ws, bg = latent_from_seed(G, seed, truncation_psi)
    return write_views(G, ws, bg, f"seed{seed:04d}", out_dir, camera or G.camera_prior.frontal(), yaws, sweep,
                       sweep_frames, max_yaw, fps, batch_size)


def latent_name(path: str | Path) -> str:
    """What a latent's renders are called: its folder for ``inv/astronaut/latent.npz`` (``astronaut``), else the
    file's stem."""
    path = Path(path)
    return path.parent.name if path.stem == "latent" and path.parent.name else path.stem


def render_latent_file(latent_path: str | Path, out_dir: str | Path, network: str | Path = "bundled:heads",
                       yaws: Sequence[float] | None = None, pitch: float | None = None, sweep: bool = False,
                       sweep_frames: int = 24, max_yaw: float = 30.0, device: str | None = None,
                       name: str | None = None) -> RenderResult:
    """Render an inverted (or edited) latent from new viewpoints without editing it, as ``name`` (default
    :func:`latent_name`; files as :func:`write_views`). The latent's own camera is the default view and the base
    of ``yaws`` and sweeps (``pitch`` overrides its pitch); its background code and, when the inversion was
    tuned (``tuning.safetensors`` beside it), its tuned generator are used."""
    G, info = load_with_info(network, device=resolve_device(device))
    latent = load_latent(latent_path, generator=info)
    G = tuned_for_latent(G, latent_path, latent, info.weights_sha256)
    camera = latent.camera if pitch is None else latent.camera.with_(pitch=pitch)
    ws = torch.from_numpy(latent.ws)[None].to(G.device)
    bg = torch.from_numpy(latent.bg_code)[None].to(G.device)
    return write_views(G, ws, bg, safe_name(name or latent_name(latent_path), "latent"), out_dir, camera, yaws, sweep, sweep_frames, max_yaw)
