"""Building blocks shared by the procedural worlds: the render record, closed-form ray intersections and
anti-aliased painting helpers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

INF = float("inf")

# Per-part coverage channels of ``HeadRender.parts`` (world 2): they sum to 1 at every pixel.
PARTS = ("background", "skin", "hair", "eyes", "mouth", "glasses")


@dataclass
class HeadRender:
    """Rendered heads."""

    image: torch.Tensor   # [B, 3, R, R] in [-1, 1] (the generator's range)
    depth: torch.Tensor   # [B, 1, R, R] camera depth of the nearest surface, averaged over covered sub-pixels
    mask: torch.Tensor    # [B, 1, R, R] fraction of each pixel covered by the head (0 = background)
    # [B, len(PARTS), R, R] fraction of each pixel covered by each part, when asked for (``parts=True``)
    parts: torch.Tensor | None = None


def ray_ellipsoid(origins: torch.Tensor, dirs: torch.Tensor, center: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Nearest positive hit distance of unit rays with axis-aligned ellipsoids, inf on a miss.

    Args:
        origins: [B, 1, 3]; dirs: unit directions [B, N, 3]; center, radii: [B, 1, 3].
    Returns:
        [B, N].
    """
    o = (origins - center) / radii
    d = dirs / radii
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 1
    disc = b * b - a * c
    t = (-b - disc.clamp(min=0).sqrt()) / a
    return torch.where((disc > 0) & (t > 0), t, torch.full_like(t, INF))


def ray_vertical_cylinder(origins: torch.Tensor, dirs: torch.Tensor, center_xy: torch.Tensor, radius: float,
                          z_range: tuple[float, float]) -> torch.Tensor:
    """Nearest hit with a finite cylinder around a vertical axis through ``center_xy`` [B, 1, 2]; inf on a miss."""
    o = origins[..., :2] - center_xy
    d = dirs[..., :2]
    a = (d * d).sum(-1).clamp(min=1e-12)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - radius * radius
    disc = b * b - a * c
    t = (-b - disc.clamp(min=0).sqrt()) / a
    z = origins[..., 2] + t * dirs[..., 2]
    ok = (disc > 0) & (t > 0) & (z > z_range[0]) & (z < z_range[1])
    return torch.where(ok, t, torch.full_like(t, INF))


def lerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * w


def band(distance: torch.Tensor, half_width: float | torch.Tensor, softness: float) -> torch.Tensor:
    """1 inside |distance| < half_width, fading to 0 over ``softness`` (resolution-independent anti-aliasing)."""
    return (1 - (distance.abs() - half_width) / softness).clamp(0, 1)


def palette(colours: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear colour ramp: u [B] in [0, 1] -> [B, 3]."""
    x = u.clamp(0, 1) * (len(colours) - 1)
    i = x.floor().long().clamp(max=len(colours) - 2)
    return lerp(colours[i], colours[i + 1], (x - i)[:, None])
