"""The settings of an inversion and of pivotal tuning, without torch: the CLI reads their defaults at start-up,
which must not wait for torch and torchvision to import (seconds on a busy machine)."""

from __future__ import annotations

import math
from dataclasses import dataclass

POSE_METHODS = ("auto", "landmarks", "predictor", "search")
PTI_PARTS = ("upsampler", "nerf", "all")

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
    # 1: every photo goes through the generator on its own, so its result is bit-identical whatever its batch mates.
    # More: that many photos per generator call, faster (most on a GPU); results then depend on batch mates through
    # float rounding only (batched products round in another order: <= 0.07 in w, 0.04 dB after 300 steps).
    photos_per_pass: int = 1
    # LPIPS (VGG16) sees the images area-downsampled to at most this size. At 256 px it is most of a CPU step's
    # arithmetic (about 80 of 130 GFLOP with its backward): 128 makes that 4x cheaper (bench/inversion_speed.py).
    # The reported ``lpips`` metric always uses LPIPS_MAX_RESOLUTION.
    lpips_resolution: int = LPIPS_MAX_RESOLUTION
    # Coarse to fine (off by default): the first ``coarse_fraction`` of the steps stop the upsampler at
    # ``coarse_resolution`` (the skip architecture's image at that size) and compare it with the photo
    # area-downsampled to it; the rest run at full size with a learning-rate schedule of their own. A generator no
    # larger than ``coarse_resolution`` runs every step at full size. It pays on large models: a 64-px step of the
    # 256-px configuration costs about a third of a full one (bench/RESULTS.md). On the 128-px bundled model's
    # benchmark (three held-out photos) half the steps coarse saved 3 % of the time and cost 0.2 dB (LPIPS 0.042 ->
    # 0.052); 70 % coarse lost 0.9 dB. The 64-px image is only 28-30 dB from the downsampled final one, which is why
    # the fine phase needs its own schedule and its share of the steps.
    coarse_fraction: float = 0.0
    coarse_resolution: int = 64

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.photos_per_pass < 1:
            raise ValueError(f"photos_per_pass must be >= 1, got {self.photos_per_pass}")
        if not 32 <= self.lpips_resolution <= LPIPS_MAX_RESOLUTION:
            raise ValueError(f"lpips_resolution must be 32 to {LPIPS_MAX_RESOLUTION}, got {self.lpips_resolution}")
        if not (math.isfinite(self.coarse_fraction) and 0 <= self.coarse_fraction < 1):
            raise ValueError(f"coarse_fraction must be in [0, 1), got {self.coarse_fraction}")
        if self.coarse_resolution < 32:
            raise ValueError(f"coarse_resolution must be at least 32, got {self.coarse_resolution}")
        for name in ("w_lr", "camera_lr", "bg_lr", "lpips_weight", "mse_weight", "w_avg_weight", "spread_weight",
                     "pose_prior_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    @classmethod
    def frozen_nerf(cls, steps: int = 300) -> "InversionConfig":
        """Camera kept, NeRF rows and background frozen (the official inversion's constraints): upsampler rows only."""
        return cls(steps=steps, refine_camera=False, fit_background=False, nerf_grad=False)


@dataclass
class TuningConfig:
    """Pivotal-tuning settings (``invert --pti`` and its ``--pti-*`` options).

    The defaults come from sweeps on held-out procedural photos of the 128-px bundled model (bench/RESULTS.md).
    On its fifth stage (two photos, W+ fits at 29.9 dB, novel views at +-25 deg 25.1 dB): 100 steps at lr 3e-3
    gained 2.0 dB at the input view, 200 steps 3.1 dB; weighting the pixel MSE 5x gained 4.5 dB in 150 steps and
    5.3 dB in 200 (10x: 6.0 dB, but edits kept less of their effect), novel views +0.2 to +0.4 dB in every case.
    150 steps at 5x take 0.6x the W+ inversion's time. Earlier, on the third stage: lr 3e-4 gained 0.6 dB and
    1e-2 less than 3e-3; a multi-view weight of 1 cost 0.6 dB against 0.3. Those settings kept only 0.72 of a smile
    edit's effect (three photos, median); the edit regulariser at weight 5 keeps 0.96-1.01 of every shipped edit
    for 0.4 dB of the fit (+4.0 dB over W+) and +0.2 dB in the novel views; at weight 20 the fit lost 1.9 dB and
    smile kept 0.92.
    """

    steps: int = 150
    lr: float = 3e-3               # Adam, on the equalised-lr parameters as stored
    parts: str = "upsampler"       # which parameters change: upsampler, nerf or all
    lpips_weight: float = 1.0
    mse_weight: float = 5.0
    locality_weight: float = 1.0   # random nearby latents keep their renders (0: off)
    locality_step: float = 0.3     # how far from the pivot toward a random sample those latents lie
    locality_latents: int = 16     # how many such latents (drawn once, the regulariser cycles through them)
    regulariser_lpips_scale: float = 0.5   # the regularisers' LPIPS input size, as a fraction of the photo term's
    multiview_weight: float = 0.3  # the pivot's renders at other cameras are kept (0: off, "naive PTI")
    views: int = 6                 # prior cameras of the multi-view regulariser
    edit_weight: float = 5.0       # edits of the pivot change the tuned image as they change the untuned one (0: off)
    edit_directions: int = 8       # along the mapping's leading principal directions in W, both signs
    edit_strength: float = 2.0     # how far, in standard deviations of W along each direction
    seed: int = 0

    def __post_init__(self) -> None:
        if self.parts not in PTI_PARTS:
            raise ValueError(f"parts must be one of {', '.join(PTI_PARTS)}, got {self.parts!r}")
        if self.steps < 1 or self.views < 1 or self.locality_latents < 1 or self.edit_directions < 1:
            raise ValueError("steps, views, locality_latents and edit_directions must be at least 1")
        if not 0 < self.regulariser_lpips_scale <= 1:
            raise ValueError(f"regulariser_lpips_scale must be in (0, 1], got {self.regulariser_lpips_scale}")
        for name in ("lr", "lpips_weight", "mse_weight", "locality_weight", "locality_step", "multiview_weight",
                     "edit_weight", "edit_strength"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
