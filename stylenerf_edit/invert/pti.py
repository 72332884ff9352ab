"""Pivotal tuning (PTI, Roich et al. 2022) for a 3-D generator: the photo's details without losing its other views.

After the W+ inversion, the synthesis network is fine-tuned for a few steps around the inverted latent (the
pivot) so that it re-renders the photo at the photo's camera (LPIPS + pixel MSE). Two regularisers keep the
tuning local, each evaluated on alternate steps (so a step costs about two renders, not three):

* locality (PTI's): latents part of the way from the pivot to random samples of the mapping keep the renders
  the original generator gives them, at the photo's camera;
* multi-view (this project's): the pivot rendered at ``views`` cameras drawn from the generator's pose prior
  keeps the original generator's renders. Without it a 3-D generator "paints the photo onto whatever geometry
  fits the input view", and the other views degrade.

A third, every step when ``edit_weight`` is set, keeps edits working: the pivot moved along the mapping's leading
principal directions in W (both signs) must change the tuned image as it changes the untuned one. Without it a
tuned upsampler holds on to the photo's features under an edit (a smile edit kept 0.72 of its effect).

The regularisers' latents and cameras are drawn once, and the untuned generator's images of them (and their LPIPS
features) computed once.
When only the upsampler is tuned (the default), the NeRF's output for every (latent, camera) is fixed too and is
rendered once: a step then runs the upsampler and LPIPS alone.

Only the chosen parameter groups change (``parts``: ``upsampler``, ``nerf`` or ``all``); the result is a
:class:`Tuning`: the changed tensors as differences from the base weights, tied to the base weights' sha256,
stored as ``tuning.safetensors`` beside ``latent.npz`` (float16 differences: the tuned weights are rebuilt to
within float16 rounding of the differences, far below the tuning's own effect).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import atomic_path
from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.generator.network import Generator, SynthesisOutput

from .latent import Latent
from .lpips import LPIPS
from .optimize import lpips_input
from .settings import LPIPS_MAX_RESOLUTION, TuningConfig

TUNING_NAME = "tuning.safetensors"
TUNED_AROUND = "tuned_around"   # an edited latent's metadata: the pivot hash of the tuning that draws it
TUNING_FORMAT = "stylenerf-edit-tuning"
class TuningError(StyleNerfEditError):
    """A tuning file is missing, malformed or made for other weights."""


@dataclass
class Tuning:
    """The changed tensors of a tuned generator as differences from its base weights."""

    deltas: dict[str, torch.Tensor]     # state-dict name -> tuned - base
    base_sha256: str                    # ``weights_sha256`` of the base weights
    config: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    pivot_sha256: str = ""              # of the latent it was tuned around (:func:`pivot_sha256`)


def pivot_sha256(ws: torch.Tensor | np.ndarray) -> str:
    """Hash of a latent's W+ rows as float32: ties a tuning file to the latent beside it."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(ws, dtype=np.float32)).tobytes()).hexdigest()


def tuned_parameters(G: Generator, parts: str) -> dict[str, torch.nn.Parameter]:
    """The parameters ``parts`` selects, by state-dict name (the mapping network never changes)."""
    prefixes = {"upsampler": tuple(f"synthesis.{b}." for b in G.synthesis.block_names),
                "nerf": ("synthesis.fg_nerf.", "synthesis.bg_nerf."),
                "all": ("synthesis.",)}[parts]
    return {name: p for name, p in G.named_parameters() if name.startswith(prefixes)}


def _render(G: Generator, ws: torch.Tensor, cameras: list[Camera], bg_code: torch.Tensor) -> torch.Tensor:
    world, intr = stack_cameras(cameras, device=G.device)
    return G.synthesis(ws.expand(len(cameras), -1, -1), world, intr, bg_code.expand(len(cameras), -1)).img


@dataclass
class _Shot:
    """One (latent, camera) the tuning renders: its NeRF output when the NeRF stays frozen (rendered once, only
    the upsampler runs per step) and, for a regulariser, the untuned generator's image to keep."""

    ws: torch.Tensor                     # [1, num_ws, w_dim]
    camera: Camera
    lowres: SynthesisOutput | None = None
    kept: torch.Tensor | None = None     # [1, 3, R, R]
    kept_features: list[torch.Tensor] = field(default_factory=list)   # LPIPS's, of ``kept``
    kept_change: torch.Tensor | None = None   # [1, 3, R, R]: an edit shot's untuned image minus the pivot's


def _shoot(G: Generator, ws: torch.Tensor, camera: Camera, bg: torch.Tensor, frozen_nerf: bool,
           lpips: LPIPS | None = None, lpips_resolution: int = LPIPS_MAX_RESOLUTION) -> _Shot:
    """A shot of the untuned ``G``; with ``lpips``, a regulariser's: the image and its LPIPS features kept."""
    with torch.no_grad():
        world, intr = stack_cameras([camera], device=G.device)
        lowres = G.synthesis.render_lowres(ws, world, intr, bg)
        shot = _Shot(ws, camera, lowres if frozen_nerf else None)
        if lpips is not None:
            shot.kept = G.synthesis.upsample(lowres, ws).img
            shot.kept_features = lpips.features(lpips_input(shot.kept, lpips_resolution))
    return shot


def _draw(G: Generator, shot: _Shot, bg: torch.Tensor) -> torch.Tensor:
    if shot.lowres is not None:
        return G.synthesis.upsample(shot.lowres, shot.ws).img
    return _render(G, shot.ws, [shot.camera], bg)


def principal_directions(G: Generator, count: int, gen: torch.Generator, samples: int = 4096) -> torch.Tensor:
    """The mapping's ``count`` leading principal directions in W, each scaled to the samples' standard deviation
    along it (the unit of an edit strength): [count, w_dim]. They stand for the edits a user may apply: the
    directions along which W actually varies."""
    w = G.mapping(G.sample_z(samples, gen).to(G.device))[:, 0].float()
    _, sv, basis = torch.linalg.svd(w - w.mean(0), full_matrices=False)
    return basis[:count] * (sv[:count, None] / (samples - 1) ** 0.5)


def tune(G: Generator, ws: torch.Tensor, camera: Camera, bg_code: torch.Tensor, target: torch.Tensor,
         lpips: LPIPS, base_sha256: str, config: TuningConfig | None = None,
         callback: Callable[[int, dict[str, float]], None] | None = None) -> Tuning:
    """Tune a copy of ``G`` around one pivot and return the difference (``G`` itself is left unchanged).

    The regularisers' latents and cameras are drawn once (``config.locality_latents`` nearby latents,
    ``config.views`` cameras) and the untuned generator's images of them rendered once; when only the upsampler
    is tuned, every NeRF output is rendered once too, so a step runs the upsampler alone.

    Args:
        ws: the pivot [num_ws, w_dim]; camera, bg_code [bg_code_dim]: the photo's, from the inversion.
        target: the aligned photo [3, R, R] in [-1, 1].
        base_sha256: ``weights_sha256`` of ``G``'s weights, recorded in the result.
        callback: called after every step with the step and its loss terms.
    """
    config = config or TuningConfig()
    R, dev = G.img_resolution, G.device
    assert ws.shape == (G.num_ws, G.cfg.w_dim), f"expected a pivot [{G.num_ws}, {G.cfg.w_dim}], got {tuple(ws.shape)}"
    assert target.shape == (3, R, R), f"expected a target [3, {R}, {R}], got {tuple(target.shape)}"
    gen = torch.Generator().manual_seed(config.seed)
    tuned = copy.deepcopy(G).eval().requires_grad_(False)
    params = tuned_parameters(tuned, config.parts)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(params.values(), lr=config.lr, betas=(0.9, 0.999))
    pivot, bg = ws.detach().to(dev, torch.float32)[None], bg_code.detach().to(dev, torch.float32)[None]
    target = target.detach().to(dev, torch.float32)[None]
    frozen_nerf = config.parts == "upsampler"
    with torch.no_grad():
        seen = lpips_input(target)
        target_features = lpips.features(seen)
        photo = _shoot(G, pivot, camera, bg, frozen_nerf)
        # the regularisers' LPIPS looks at a smaller image: they keep renders close, the photo's term fits detail
        reg_res = max(16, round(seen.shape[-1] * config.regulariser_lpips_scale))
        views = [_shoot(G, pivot, view, bg, frozen_nerf, lpips, reg_res)
                 for view in G.camera_prior.sample(config.views, gen)]
        w_random = G.mapping(G.sample_z(config.locality_latents, gen).to(dev))
        nearby = [_shoot(G, pivot + config.locality_step * (w[None] - pivot), camera, bg, frozen_nerf, lpips, reg_res)
                  for w in w_random]
        edited = []
        if config.edit_weight:
            pivot_img = _draw(G, photo, bg)
            for d in principal_directions(G, config.edit_directions, gen):
                for sign in (1.0, -1.0):
                    shot = _shoot(G, pivot + sign * config.edit_strength * d, camera, bg, frozen_nerf)
                    shot.kept_change = _draw(G, shot, bg) - pivot_img
                    edited.append(shot)
    for step in range(config.steps):
        opt.zero_grad(set_to_none=True)
        img = _draw(tuned, photo, bg)
        terms = {"lpips": lpips.distance(lpips_input(img), target_features).mean(),
                 "mse": (img - target).square().mean()}
        total = config.lpips_weight * terms["lpips"] + config.mse_weight * terms["mse"]
        # each regulariser on alternate steps, cycling through its shots: a step costs two renders, not three
        for name, weight, shots, parity in (("locality", config.locality_weight, nearby, 0),
                                            ("multiview", config.multiview_weight, views, 1)):
            if weight and step % 2 == parity:
                shot = shots[(step // 2) % len(shots)]
                got = _draw(tuned, shot, bg)
                terms[name] = (lpips.distance(lpips_input(got, reg_res), shot.kept_features).mean()
                               + (got - shot.kept).square().mean())
                total = total + weight * terms[name]
        if edited:
            # the tuning's change at the pivot carries over to edited latents: an edit changes the tuned image as
            # it changes the untuned one
            shot = edited[step % len(edited)]
            terms["edits"] = ((_draw(tuned, shot, bg) - img) - shot.kept_change).square().mean()
            total = total + config.edit_weight * terms["edits"]
        if not torch.isfinite(total):
            raise FloatingPointError(f"the tuning loss became non-finite at step {step}; lower --pti-lr")
        total.backward()
        opt.step()
        if callback is not None:
            callback(step, {k: float(v.detach()) for k, v in terms.items()})
    base = dict(G.named_parameters())
    deltas = {name: (p.detach() - base[name].detach()).cpu() for name, p in params.items()}
    return Tuning(deltas=deltas, base_sha256=base_sha256, config=asdict(config))


def apply_tuning(G: Generator, tuning: Tuning, base_sha256: str) -> Generator:
    """A copy of ``G`` with ``tuning`` added; refused (one line) when ``G``'s weights are not the tuning's base."""
    if tuning.base_sha256 != base_sha256:
        raise TuningError(f"the tuning was made for weights {tuning.base_sha256[:12]}…, not these "
                          f"({base_sha256[:12]}…); use the generator the photo was inverted with")
    tuned = copy.deepcopy(G)
    state = tuned.state_dict()
    with torch.no_grad():
        for name, delta in tuning.deltas.items():
            if name not in state or state[name].shape != delta.shape:
                raise TuningError(f"the tuning changes {name} {list(delta.shape)}, which this generator does not "
                                  "have with that shape; use the generator the photo was inverted with")
            state[name].add_(delta.to(state[name].device, state[name].dtype))
    return tuned


def save_tuning(tuning: Tuning, path: str | Path, pivot: torch.Tensor | np.ndarray | None = None) -> Path:
    """Write ``tuning`` as safetensors (float16 differences), atomically; ``pivot`` (the latent's ws) ties it to
    its latent."""
    path = Path(path)
    pivot_hash = pivot_sha256(pivot.detach().cpu() if isinstance(pivot, torch.Tensor) else pivot) \
        if pivot is not None else tuning.pivot_sha256
    meta = {"format": TUNING_FORMAT, "format_version": "1", "base_weights_sha256": tuning.base_sha256,
            "pivot_sha256": pivot_hash, "config": json.dumps(tuning.config), "metrics": json.dumps(tuning.metrics)}
    with atomic_path(path) as tmp:
        save_file({k: v.to(torch.float16).contiguous() for k, v in tuning.deltas.items()}, str(tmp), metadata=meta)
    return path


def load_tuning(path: str | Path) -> Tuning:
    """Read a tuning file written by :func:`save_tuning`; one-line :class:`TuningError` for a bad file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise TuningError(f"{path}: no such tuning file; make one with `stylenerf-edit invert --pti`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != TUNING_FORMAT or meta.get("format_version") != "1":
            raise ValueError("not a stylenerf-edit tuning file")
        deltas = {k: v.float() for k, v in load_file(str(path)).items()}
        config, metrics = json.loads(meta.get("config", "{}")), json.loads(meta.get("metrics", "{}"))
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise TuningError(f"{path}: unreadable tuning file ({type(e).__name__}: {str(e)[:80]}); re-run "
                          "`stylenerf-edit invert --pti`") from None
    if not all(torch.isfinite(v).all() for v in deltas.values()):
        raise TuningError(f"{path}: the tuning holds NaN or infinite values; re-run `stylenerf-edit invert --pti`")
    return Tuning(deltas=deltas, base_sha256=meta.get("base_weights_sha256", ""), config=config, metrics=metrics,
                  pivot_sha256=meta.get("pivot_sha256", ""))


def tuning_beside(latent_path: str | Path) -> Path | None:
    """The ``tuning.safetensors`` beside a latent file, or None."""
    path = Path(latent_path).parent / TUNING_NAME
    return path if path.is_file() else None


def carry_tuning(latent: Latent, tuning_path: str | Path | None) -> Latent:
    """``latent`` (an edit of the tuned pivot) marked as drawn by that tuning: its metadata names the pivot the
    tuning was made around, so the tuning copied beside it is accepted although its own W+ rows differ.
    ``latent`` itself when there is no tuning (None)."""
    if tuning_path is None:
        return latent
    return replace(latent, extra={**latent.extra, TUNED_AROUND: load_tuning(tuning_path).pivot_sha256})


def tuned_for_latent(G: Generator, latent_path: str | Path, latent: Latent, base_sha256: str) -> Generator:
    """``G`` with the tuning saved beside ``latent_path`` (``tuning.safetensors``) applied, or ``G`` itself when
    there is none. A tuning made around another latent (neither this one nor the pivot it records, as an edit
    does) is refused in one line."""
    path = tuning_beside(latent_path)
    if path is None:
        return G
    tuning = load_tuning(path)
    if tuning.pivot_sha256 and tuning.pivot_sha256 not in (pivot_sha256(latent.ws), latent.extra.get(TUNED_AROUND)):
        raise TuningError(f"{path}: tuned around another latent than {latent_path}; move one of them away")
    return apply_tuning(G, tuning, base_sha256)
