"""W+ optimisation through the whole generator, with the camera and background code refined jointly.

Unlike the official inversion (fixed camera; its eval mode freezes the NeRF rows and background), every row of W+
receives gradients through the volume renderer, the camera's yaw and pitch follow the photo under the
generator's pose prior, and the background code is fitted too. Several photos are optimised in one call,
but each goes through the generator and LPIPS on its own, with its own leaf tensors in Adam, so a photo's
result is bit-identical alone or with any batch mates at any position. (Batched matrix products round in
an order that depends on the batch size; 300 steps amplified that to 0.07 in w, 0.04 dB. Batching 4-8
photos saved 10-17 % CPU time per step on one thread with the bundled model.) There is no randomness: the
same inputs give the same result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylenerf_edit.generator.camera import Camera, intrinsics_inverse, world_matrix
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.metrics import psnr, ssim

from .lpips import LPIPS
from .settings import LPIPS_MAX_RESOLUTION, InversionConfig

@dataclass
class InversionResult:
    """One photo's optimised latent and how it got there."""

    ws: torch.Tensor                       # [num_ws, w_dim]
    camera: Camera
    bg_code: torch.Tensor                  # [bg_code_dim]
    image: torch.Tensor                    # [3, R, R] final reconstruction in [-1, 1]
    history: dict[str, np.ndarray] = field(default_factory=dict)   # loss term -> [steps]
    metrics: dict[str, float] = field(default_factory=dict)        # psnr, ssim, lpips of the final image


def learning_rate_factor(step: int, steps: int, warmup: float, rampdown: float) -> float:
    """Linear ramp-up over the first ``warmup`` fraction, cosine ramp-down over the last ``rampdown``."""
    t = step / steps
    up = min(1.0, t / warmup) if warmup > 0 else 1.0
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    return up * (0.5 - 0.5 * math.cos(down * math.pi))


def lpips_input(images: torch.Tensor, max_resolution: int = LPIPS_MAX_RESOLUTION) -> torch.Tensor:
    """Images [B, 3, R, R] as LPIPS sees them: area-downsampled to at most ``max_resolution``."""
    if images.shape[-1] > max_resolution:
        return F.interpolate(images, size=(max_resolution, max_resolution), mode="area")
    return images


def coarse_phase(config: InversionConfig, block_resolutions: Sequence[int]) -> tuple[int, int]:
    """The coarse phase for a generator whose upsampler blocks output ``block_resolutions`` (the last one its image
    size): how many of the first steps run coarse, and the size the upsampler stops at there (the first block at
    least ``coarse_resolution``). No steps when that block is the last one, and never the last step (the result is
    fitted at full size)."""
    size = min((r for r in block_resolutions if r >= config.coarse_resolution), default=block_resolutions[-1])
    if size >= block_resolutions[-1]:
        return 0, size
    return min(round(config.coarse_fraction * config.steps), config.steps - 1), size


StepCallback = Callable[[int, dict[str, torch.Tensor], torch.Tensor], None]


@dataclass
class _Pass:
    """The K photos that go through the generator together: their targets and their own optimised leaves."""

    target: torch.Tensor        # [K, 3, R, R]
    target_features: list[torch.Tensor]     # the targets' LPIPS features, computed once
    coarse_target: torch.Tensor | None      # [K, 3, r, r]: the targets at the coarse phase's size r (if it has steps)
    coarse_features: list[torch.Tensor]
    ws: torch.Tensor            # [K, num_ws, w_dim]
    bg_code: torch.Tensor       # [K, bg_code_dim]
    yaw: torch.Tensor           # [K]
    pitch: torch.Tensor         # [K]
    radius: torch.Tensor        # [K]
    camera_mat: torch.Tensor    # [K, 4, 4]

    def render(self, G: Generator, nerf_grad: bool = True, max_resolution: int | None = None) -> torch.Tensor:
        world = world_matrix(self.yaw, self.pitch, self.radius)
        return G.synthesis(self.ws, world, self.camera_mat, self.bg_code, nerf_grad=nerf_grad,
                           max_resolution=max_resolution).img


def _loss_terms(G: Generator, photo: _Pass, lpips: LPIPS, config: InversionConfig, w_avg: torch.Tensor,
                coarse: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-photo loss terms (each [K], "total" included) and the current images [K, 3, R, R] (or, ``coarse``,
    the upsampler stopped at the coarse size, against the targets downsampled to it)."""
    if coarse:
        img = photo.render(G, config.nerf_grad, photo.coarse_target.shape[-1])
        target, features = photo.coarse_target, photo.coarse_features
    else:
        img, target, features = photo.render(G, config.nerf_grad), photo.target, photo.target_features
    terms = {"lpips": lpips.distance(lpips_input(img, config.lpips_resolution), features),
             "mse": (img - target).square().mean(dim=(1, 2, 3))}
    total = config.lpips_weight * terms["lpips"] + config.mse_weight * terms["mse"]
    if config.w_avg_weight:
        terms["w_avg"] = (photo.ws - w_avg).square().mean(dim=(1, 2))
        total = total + config.w_avg_weight * terms["w_avg"]
    if config.spread_weight:
        terms["spread"] = (photo.ws - photo.ws.mean(dim=1, keepdim=True)).square().mean(dim=(1, 2))
        total = total + config.spread_weight * terms["spread"]
    if config.refine_camera and config.pose_prior_weight:
        terms["pose_prior"] = -G.camera_prior.log_prob(photo.yaw, photo.pitch)
        total = total + config.pose_prior_weight * terms["pose_prior"]
    terms["total"] = total
    return terms, img


def invert(G: Generator, targets: torch.Tensor, cameras: Sequence[Camera], lpips: LPIPS,
           config: InversionConfig | None = None, init_ws: torch.Tensor | None = None,
           init_bg_code: torch.Tensor | None = None, callback: StepCallback | None = None) -> list[InversionResult]:
    """Optimise W+ (and camera, background code) so that ``G`` re-renders each target.

    Args:
        targets: photos [B, 3, R, R] in [-1, 1] at the generator's resolution R.
        cameras: initial camera per photo (pose estimate, or the prior's frontal camera).
        lpips: the perceptual distance (the targets' features are computed once, not at every step).
        init_ws: starting W+ [B, num_ws, w_dim] (default: ``w_avg`` on every row).
        init_bg_code: starting background code [B, bg_code_dim] (default: zeros, the prior mean).
        callback: called after every step with (step, per-photo loss terms [B], current images [B, 3, R, R]).
    """
    config = config or InversionConfig()
    B, R, dev = targets.shape[0], G.img_resolution, G.device
    assert targets.shape == (B, 3, R, R), f"expected targets [B, 3, {R}, {R}], got {tuple(targets.shape)}"
    assert len(cameras) == B, f"{len(cameras)} cameras for {B} photos"
    targets = targets.to(dev, torch.float32)
    if not torch.isfinite(targets).all():
        raise ValueError("targets contain NaN or infinite values")
    w_avg = G.mapping.w_avg.detach()
    ws0 = w_avg.expand(B, G.num_ws, -1) if init_ws is None else init_ws.to(dev)
    assert ws0.shape == (B, G.num_ws, G.cfg.w_dim), f"init_ws must be [B, {G.num_ws}, {G.cfg.w_dim}]"
    bg0 = torch.zeros(B, G.cfg.bg_code_dim, device=dev) if init_bg_code is None else init_bg_code.to(dev)
    fit_bg = config.fit_background and config.nerf_grad

    def leaf(values: list[float], grad: bool) -> torch.Tensor:
        # Fresh tensors per pass: no pass's tensor is a view into (or shares memory layout with) another's.
        return torch.tensor(values, dtype=torch.float32, device=dev).requires_grad_(grad)

    coarse_steps, coarse_res = coarse_phase(config, G.cfg.block_resolutions)
    photos = []
    for i in range(0, B, config.photos_per_pass):
        j, cams = i + config.photos_per_pass, cameras[i:i + config.photos_per_pass]
        target = targets[i:j].clone()
        coarse_target, coarse_features = None, []
        with torch.no_grad():
            target_features = lpips.features(lpips_input(target, config.lpips_resolution))
            if coarse_steps:
                coarse_target = lpips_input(target, coarse_res)
                coarse_features = lpips.features(lpips_input(coarse_target, config.lpips_resolution))
        photos.append(_Pass(target=target, target_features=target_features, coarse_target=coarse_target,
                            coarse_features=coarse_features,
                            ws=ws0[i:j].detach().float().clone().requires_grad_(True),
                            bg_code=bg0[i:j].detach().float().clone().requires_grad_(fit_bg),
                            yaw=leaf([c.yaw for c in cams], config.refine_camera),
                            pitch=leaf([c.pitch for c in cams], config.refine_camera),
                            radius=leaf([c.radius for c in cams], False),
                            camera_mat=intrinsics_inverse(torch.tensor([c.fov for c in cams])).to(dev)))

    groups = [{"params": [p.ws for p in photos], "lr": config.w_lr, "base": config.w_lr}]
    if config.refine_camera:
        groups.append({"params": [t for p in photos for t in (p.yaw, p.pitch)], "lr": config.camera_lr,
                       "base": config.camera_lr})
    if fit_bg:
        groups.append({"params": [p.bg_code for p in photos], "lr": config.bg_lr, "base": config.bg_lr})
    opt = torch.optim.Adam(groups, betas=(0.9, 0.999))
    history: dict[str, list[np.ndarray]] = {}
    was_training, grad_flags = G.training, [p.requires_grad for p in G.parameters()]
    G.eval().requires_grad_(False)   # gradients reach the latents only
    try:
        for step in range(config.steps):
            # each phase has its own schedule: the coarse one ramps up and holds; the fine one, a new objective,
            # ramps up again, holds and ramps down (with no coarse phase: the one schedule over all the steps)
            if step < coarse_steps:
                factor = learning_rate_factor(step, coarse_steps, config.warmup, 0.0)
            else:
                factor = learning_rate_factor(step - coarse_steps, config.steps - coarse_steps, config.warmup,
                                              config.rampdown)
            for g in opt.param_groups:
                g["lr"] = g["base"] * factor
            opt.zero_grad(set_to_none=True)
            per_photo, images = [], []
            for photo in photos:
                terms, img = _loss_terms(G, photo, lpips, config, w_avg, coarse=step < coarse_steps)
                if not torch.isfinite(terms["total"]).all():
                    raise FloatingPointError(f"the loss became non-finite at step {step}; lower the learning rates")
                terms["total"].sum().backward()
                per_photo.append({k: v.detach() for k, v in terms.items()})
                images.append(img.detach())
            opt.step()
            terms = {k: torch.cat([t[k] for t in per_photo]) for k in per_photo[0]}
            for k, v in terms.items():
                history.setdefault(k, []).append(v.cpu().numpy())
            if callback is not None:   # it sees every step's images at the photo's size
                shown = torch.cat(images)
                if shown.shape[-1] != R:
                    shown = F.interpolate(shown, size=(R, R), mode="bilinear", align_corners=False)
                callback(step, terms, shown)
        with torch.no_grad():
            images = [photo.render(G) for photo in photos]
            scores = {"psnr": torch.cat([psnr(img, p.target) for img, p in zip(images, photos)]),
                      "ssim": torch.cat([ssim(img, p.target) for img, p in zip(images, photos)]),
                      "lpips": torch.cat([lpips(lpips_input(img), lpips_input(p.target))
                                          for img, p in zip(images, photos)])}
            finals = torch.cat(images)
            metrics = [{k: float(v[i]) for k, v in scores.items()} for i in range(B)]
    finally:
        G.train(was_training)
        for p, flag in zip(G.parameters(), grad_flags):
            p.requires_grad_(flag)
    stacked = {k: np.stack(v, axis=1) for k, v in history.items()}    # [B, steps]
    ws, bg_code = torch.cat([p.ws.detach() for p in photos]), torch.cat([p.bg_code.detach() for p in photos])
    yaw, pitch = torch.cat([p.yaw.detach() for p in photos]), torch.cat([p.pitch.detach() for p in photos])
    return [InversionResult(ws=ws[i], camera=cam.with_(yaw=yaw[i].item(), pitch=pitch[i].item()), bg_code=bg_code[i],
                            image=finals[i], history={k: v[i] for k, v in stacked.items()}, metrics=metrics[i])
            for i, cam in enumerate(cameras)]
