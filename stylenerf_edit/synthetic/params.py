"""Parameters of a procedural head, their documented ranges, and the map from generator latents to them.

A head is drawn from the first ``NUM_HEAD_PARAMS`` coordinates of the *normalised* z (the mapping
network's own first step), each pushed through the standard normal CDF onto its range; the background
colour comes from the generator's background code. So ``G(z, camera, bg_code)`` has one exact target:
``render_heads(head_params_from_z(z), camera, background_from_code(bg_code))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

# name: (low, high, meaning). Continuous unless noted; all are per-head tensors of shape [B].
PARAM_RANGES: dict[str, tuple[float, float, str]] = {
    "smile": (-1.0, 1.0, "-1 frown (corners down, mouth closed), 0 neutral, +1 grin (corners up, mouth open, teeth)"),
    "age": (0.0, 1.0, "0 young; 1 old: grey hair, paler skin, forehead and cheek lines, sagging jaw"),
    "glasses": (0.0, 1.0, "binary: 1 wears dark-rimmed glasses (30 % of heads)"),
    "hair_color": (0.0, 1.0, "0 black, 0.33 brown, 0.67 auburn, 1 blond (before greying with age)"),
    "skin_tone": (0.0, 1.0, "0 light to 1 dark"),
    "face_width": (-1.0, 1.0, "-1 narrow to +1 wide face and jaw (about +-12 %)"),
    "eye_size": (-1.0, 1.0, "-1 small to +1 large eyes (about +-30 %)"),
    "nose_length": (-1.0, 1.0, "-1 short to +1 long nose (about +-40 % protrusion)"),
    "light_azimuth": (-1.0, 1.0, "light from the subject's right (-1, -50 deg) to left (+1, +50 deg)"),
    "light_elevation": (-1.0, 1.0, "light from below the horizon (-1, -10 deg) to above (+1, +60 deg)"),
}
NUM_HEAD_PARAMS = len(PARAM_RANGES)
GLASSES_FRACTION = 0.3
BACKGROUND_RANGE = (0.1, 0.9)   # per RGB channel
BACKGROUND_CODE_SCALE = 0.65    # the generator's default background temperature


@dataclass
class HeadParams:
    """A batch of heads: every field a float tensor [B] within :data:`PARAM_RANGES`."""

    smile: torch.Tensor
    age: torch.Tensor
    glasses: torch.Tensor
    hair_color: torch.Tensor
    skin_tone: torch.Tensor
    face_width: torch.Tensor
    eye_size: torch.Tensor
    nose_length: torch.Tensor
    light_azimuth: torch.Tensor
    light_elevation: torch.Tensor

    def __post_init__(self) -> None:
        shapes = {tuple(getattr(self, f.name).shape) for f in fields(self)}
        assert len(shapes) == 1 and len(next(iter(shapes))) == 1, f"fields must share one shape [B], got {shapes}"

    def __len__(self) -> int:
        return self.smile.shape[0]

    @classmethod
    def neutral(cls, n: int = 1, **overrides: float) -> "HeadParams":
        """``n`` identical mid-range heads (symmetric lighting), with named fields overridden."""
        mid = {name: 0.0 if lo < 0 else 0.5 for name, (lo, _, _) in PARAM_RANGES.items()}
        mid["glasses"] = 0.0
        mid.update(overrides)
        unknown = set(overrides) - set(PARAM_RANGES)
        if unknown:
            raise ValueError(f"unknown head parameters: {', '.join(sorted(unknown))}")
        return cls(**{k: torch.full((n,), float(v)) for k, v in mid.items()})

    def to(self, device: torch.device | str) -> "HeadParams":
        return HeadParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, i: int) -> dict[str, float]:
        """Head ``i`` as plain floats (for JSON)."""
        return {f.name: float(getattr(self, f.name)[i]) for f in fields(self)}

    def as_tensor(self) -> torch.Tensor:
        """[B, NUM_HEAD_PARAMS] in :data:`PARAM_RANGES` order."""
        return torch.stack([getattr(self, name) for name in PARAM_RANGES], dim=1)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "HeadParams":
        assert t.ndim == 2 and t.shape[1] == NUM_HEAD_PARAMS
        return cls(**{name: t[:, i] for i, name in enumerate(PARAM_RANGES)})


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def head_params_from_z(z: torch.Tensor) -> HeadParams:
    """Generator latents z [B, z_dim] -> heads. Uses the first NUM_HEAD_PARAMS coordinates of the
    normalised z (``z / rms(z)``, exactly what the mapping network sees)."""
    assert z.ndim == 2 and z.shape[1] >= NUM_HEAD_PARAMS
    zn = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    u = _normal_cdf(zn[:, :NUM_HEAD_PARAMS].double()).float()
    values: dict[str, Any] = {}
    for i, (name, (lo, hi, _)) in enumerate(PARAM_RANGES.items()):
        values[name] = lo + (hi - lo) * u[:, i]
    values["glasses"] = (u[:, 2] > 1 - GLASSES_FRACTION).float()
    return HeadParams(**values)


def background_from_code(code: torch.Tensor) -> torch.Tensor:
    """Background codes [B, D] -> flat background colours [B, 3] in BACKGROUND_RANGE (first 3 coordinates)."""
    assert code.ndim == 2 and code.shape[1] >= 3
    lo, hi = BACKGROUND_RANGE
    return lo + (hi - lo) * _normal_cdf(code[:, :3] / BACKGROUND_CODE_SCALE)
