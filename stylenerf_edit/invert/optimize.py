"""W+ optimisation through the whole generator, with the camera and background code refined jointly.

Unlike the official projector (frontal camera, NeRF rows frozen, background discarded), every row of W+
receives gradients through the volume renderer, the camera's yaw and pitch follow the photo under the
generator's pose prior, and the background code is fitted too. Several photos are optimised as one batch:
each photo's loss is summed (not averaged), and Adam works per element, so a photo's result does not depend
on its batch mates. There is no randomness: the same inputs give the same result.
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

LPIPS_MAX_RESOLUTION = 256   # LPIPS sees at most this size (area-downsampled), as in StyleGAN2's projector


@dataclass
class InversionConfig:
    """Optimisation settings; the defaults suit the bundled model and the official FFHQ models alike."""

    steps: int = 300
    w_lr: float = 0.02              # Adam step on W+ (w units; w varies by ~1 per coordinate)
    # Adam step on yaw/pitch in degrees: small, so a good initial estimate is kept while W+ is still far from the
    # photo (larger steps let the camera chase W's early errors: 2.0 deg median error at 0.4 from 0.8 deg).
    camera_lr: float = 0.1
    bg_lr: float = 0.05             # Adam step on the background code
    warmup: float = 0.05            # fraction of the steps with a linear learning-rate ramp-up
    rampdown: float = 0.25          # fraction of the steps with a cosine ramp-down to zero
    lpips_weight: float = 1.0
    mse_weight: float = 1.0         # pixel MSE on [-1, 1] images
    w_avg_weight: float = 0.0       # mean squared distance of the W+ rows to w_avg
    spread_weight: float = 0.0      # mean squared distance of the W+ rows to their own mean
    pose_prior_weight: float = 0.01  # negative log-density of the camera under the generator's pose prior
    refine_camera: bool = True
    fit_background: bool = True
    nerf_grad: bool = True          # False: the official eval mode, NeRF rows and background frozen

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        for name in ("w_lr", "camera_lr", "bg_lr", "lpips_weight", "mse_weight", "w_avg_weight", "spread_weight",
                     "pose_prior_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    @classmethod
    def official_baseline(cls, steps: int = 300) -> "InversionConfig":
        """The official projector's setting: fixed camera, NeRF rows and background frozen, W+ only."""
        return cls(steps=steps, refine_camera=False, fit_background=False, nerf_grad=False)


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


def lpips_input(images: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, R, R] as LPIPS sees them: area-downsampled to at most LPIPS_MAX_RESOLUTION."""
    if images.shape[-1] > LPIPS_MAX_RESOLUTION:
        return F.interpolate(images, size=(LPIPS_MAX_RESOLUTION, LPIPS_MAX_RESOLUTION), mode="area")
    return images


StepCallback = Callable[[int, dict[str, torch.Tensor], torch.Tensor], None]


def invert(G: Generator, targets: torch.Tensor, cameras: Sequence[Camera], lpips: torch.nn.Module,
           config: InversionConfig | None = None, init_ws: torch.Tensor | None = None,
           init_bg_code: torch.Tensor | None = None, callback: StepCallback | None = None) -> list[InversionResult]:
    """Optimise W+ (and camera, background code) so that ``G`` re-renders each target.

    Args:
        targets: photos [B, 3, R, R] in [-1, 1] at the generator's resolution R.
        cameras: initial camera per photo (pose estimate, or the prior's frontal camera).
        lpips: per-image perceptual distance module, ``lpips(x, y) -> [B]``.
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
    ws = ws0.detach().clone().float().requires_grad_(True)
    bg0 = torch.zeros(B, G.cfg.bg_code_dim, device=dev) if init_bg_code is None else init_bg_code.to(dev)
    bg_code = bg0.detach().clone().float().requires_grad_(config.fit_background and config.nerf_grad)
    yaw = torch.tensor([c.yaw for c in cameras], dtype=torch.float32, device=dev, requires_grad=config.refine_camera)
    pitch = torch.tensor([c.pitch for c in cameras], dtype=torch.float32, device=dev,
                         requires_grad=config.refine_camera)
    radius = torch.tensor([c.radius for c in cameras], dtype=torch.float32, device=dev)
    camera_mat = intrinsics_inverse(torch.tensor([c.fov for c in cameras], dtype=torch.float32)).to(dev)

    groups = [{"params": [ws], "lr": config.w_lr, "base": config.w_lr}]
    if config.refine_camera:
        groups.append({"params": [yaw, pitch], "lr": config.camera_lr, "base": config.camera_lr})
    if bg_code.requires_grad:
        groups.append({"params": [bg_code], "lr": config.bg_lr, "base": config.bg_lr})
    opt = torch.optim.Adam(groups, betas=(0.9, 0.999))
    target_lp = lpips_input(targets)
    history: dict[str, list[np.ndarray]] = {}
    was_training, grad_flags = G.training, [p.requires_grad for p in G.parameters()]
    G.eval().requires_grad_(False)   # gradients reach the latents only
    try:
        for step in range(config.steps):
            factor = learning_rate_factor(step, config.steps, config.warmup, config.rampdown)
            for g in opt.param_groups:
                g["lr"] = g["base"] * factor
            world = world_matrix(yaw, pitch, radius)
            img = G.synthesis(ws, world, camera_mat, bg_code, nerf_grad=config.nerf_grad).img
            terms = {"lpips": lpips(lpips_input(img), target_lp).reshape(B),
                     "mse": (img - targets).square().mean(dim=(1, 2, 3))}
            total = config.lpips_weight * terms["lpips"] + config.mse_weight * terms["mse"]
            if config.w_avg_weight:
                terms["w_avg"] = (ws - w_avg).square().mean(dim=(1, 2))
                total = total + config.w_avg_weight * terms["w_avg"]
            if config.spread_weight:
                terms["spread"] = (ws - ws.mean(dim=1, keepdim=True)).square().mean(dim=(1, 2))
                total = total + config.spread_weight * terms["spread"]
            if config.refine_camera and config.pose_prior_weight:
                terms["pose_prior"] = -G.camera_prior.log_prob(yaw, pitch)
                total = total + config.pose_prior_weight * terms["pose_prior"]
            terms["total"] = total
            if not torch.isfinite(total).all():
                raise FloatingPointError(f"the loss became non-finite at step {step}; lower the learning rates")
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
            for k, v in terms.items():
                history.setdefault(k, []).append(v.detach().cpu().numpy())
            if callback is not None:
                callback(step, {k: v.detach() for k, v in terms.items()}, img.detach())
        with torch.no_grad():
            final = G.synthesis(ws, world_matrix(yaw, pitch, radius), camera_mat, bg_code).img
            metrics = {"psnr": psnr(final, targets), "ssim": ssim(final, targets),
                       "lpips": lpips(lpips_input(final), target_lp).reshape(B)}
    finally:
        G.train(was_training)
        for p, flag in zip(G.parameters(), grad_flags):
            p.requires_grad_(flag)
    stacked = {k: np.stack(v, axis=1) for k, v in history.items()}    # [B, steps]
    yaw, pitch = yaw.detach(), pitch.detach()
    return [InversionResult(ws=ws[i].detach(), camera=cameras[i].with_(yaw=float(yaw[i]), pitch=float(pitch[i])),
                            bg_code=bg_code[i].detach(), image=final[i],
                            history={k: v[i] for k, v in stacked.items()},
                            metrics={k: float(v[i]) for k, v in metrics.items()})
            for i in range(B)]
