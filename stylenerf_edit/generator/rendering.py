"""Volume rendering of the foreground and background fields into a low-resolution feature image.

Pure functions on tensors (shapes in the docstrings) and one thin module that runs the official recipe:
coarse samples at uniform camera depths, deterministic hierarchical resampling, compositing of the
merged samples with an open last interval, then the NeRF++ background behind the remaining
transmittance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .nerf import BackgroundNeRF, ForegroundNeRF


def alpha_composite_weights(sigma: torch.Tensor, deltas: torch.Tensor,
                            opaque_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Compositing weights ``w_k = a_k * prod_{j<k}(1 - a_j + 1e-10)`` with ``a_k = 1 - exp(-relu(sigma_k) delta_k)``.

    Args:
        sigma: raw densities [..., S].
        deltas: interval lengths [..., S].
        opaque_last: force the last alpha to 1 (the weights then sum to one).
    Returns:
        weights [..., S] and the transmittance in front of the last sample [...].
    """
    alpha = 1.0 - torch.exp(-torch.relu(sigma) * deltas)
    if opaque_last:
        alpha = torch.cat([alpha[..., :-1], torch.ones_like(alpha[..., :1])], dim=-1)
    survive = torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1] + 1e-10], dim=-1)
    transmittance = torch.cumprod(survive, dim=-1)
    return alpha * transmittance, transmittance[..., -1]


def foreground_deltas(depth: torch.Tensor, ray_length: torch.Tensor) -> torch.Tensor:
    """Euclidean interval lengths [..., S] from camera depths [..., S] and |direction| [..., 1]; the last is 0.

    A zero last interval leaves the transmittance behind the foreground to the background field.
    """
    deltas = (depth[..., 1:] - depth[..., :-1]) * ray_length
    return torch.cat([deltas, torch.zeros_like(deltas[..., :1])], dim=-1)


def sample_pdf_deterministic(bins: torch.Tensor, weights: torch.Tensor, n_samples: int,
                             eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF samples at evenly spaced quantiles ``u = 0, 1/(n-1), ..., 1``.

    Args:
        bins: bin edges [..., M + 1].
        weights: bin weights [..., M] (``eps`` is added to each).
    Returns:
        samples [..., n_samples].
    """
    assert bins.shape[-1] == weights.shape[-1] + 1
    weights = weights + eps
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    u = torch.linspace(0.0, 1.0, n_samples, dtype=bins.dtype, device=bins.device).expand(*cdf.shape[:-1], n_samples)
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous())
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=weights.shape[-1])
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def inverse_sphere_points(origins: torch.Tensor, directions: torch.Tensor, inv_radius: torch.Tensor) -> torch.Tensor:
    """NeRF++ background points: where each ray meets the sphere of radius 1/q, mapped onto the unit sphere.

    Args:
        origins: camera centres [B, 3] (inside the unit sphere).
        directions: unit ray directions [B, N, 3].
        inv_radius: inverse radii q [S] in [0, 1] (0 = infinity).
    Returns:
        [B, N, S, 4] points ``(unit vector, q)``.
    """
    o = origins[:, None, :].expand_as(directions)
    d1 = -(directions * o).sum(-1)                                     # distance to the closest point
    mid = o + d1[..., None] * directions
    mid_norm = mid.norm(dim=-1)
    exit_point = o + (d1 + torch.sqrt(1.0 - mid_norm * mid_norm))[..., None] * directions
    axis = torch.nn.functional.normalize(torch.linalg.cross(o, exit_point, dim=-1), dim=-1, eps=0.0)
    angle = (torch.asin(mid_norm)[..., None] - torch.asin(mid_norm[..., None] * inv_radius))[..., None]  # [B,N,S,1]
    p = exit_point[..., None, :].expand(*angle.shape[:-1], 3)                           # [B, N, S, 3]
    a = axis[..., None, :].expand_as(p)
    rotated = (p * angle.cos() + torch.linalg.cross(a, p, dim=-1) * angle.sin()
               + a * (a * p).sum(-1, keepdim=True) * (1.0 - angle.cos()))                # Rodrigues
    unit = rotated / rotated.norm(dim=-1, keepdim=True)
    return torch.cat([unit, inv_radius[:, None].expand(*unit.shape[:-1], 1)], dim=-1)


@dataclass
class RenderedRays:
    """Output of the volume renderer, per ray (row-major over the NeRF grid)."""

    features: torch.Tensor          # [B, N, 3 + F]: low-res RGB then features
    fg_depth: torch.Tensor          # [B, N, S_fg] sorted camera depths of the foreground samples
    fg_weights: torch.Tensor        # [B, N, S_fg]
    bg_lambda: torch.Tensor         # [B, N] transmittance left for the background
    bg_weights: torch.Tensor        # [B, N, S_bg]


class VolumeRenderer(nn.Module):
    """Foreground + background volume rendering with the official sampling recipe (no parameters)."""

    def __init__(self, n_ray_samples: int, n_bg_samples: int, depth_range: tuple[float, float], bg_start: float):
        super().__init__()
        self.n_ray_samples, self.n_bg_samples = n_ray_samples, n_bg_samples
        self.depth_range, self.bg_start = tuple(depth_range), bg_start

    def depth(self, tau: torch.Tensor) -> torch.Tensor:
        """Normalised depth in [0, 1] -> camera depth, written as the official linear blend."""
        near, far = self.depth_range
        return far * tau + near * (1 - tau)

    def forward(self, fg: ForegroundNeRF, bg: BackgroundNeRF, ws_fg: torch.Tensor, bg_code: torch.Tensor,
                origins: torch.Tensor, directions: torch.Tensor, *, n_samples: int | None = None,
                hierarchical: bool = True) -> RenderedRays:
        """Render rays.

        Args:
            ws_fg: [B, fg.num_ws, w_dim].
            bg_code: [B, bg.code_dim].
            origins: [B, 3]; directions: [B, N, 3] (camera-space z component -1).
            n_samples: coarse (and fine) samples per ray; defaults to ``n_ray_samples``.
        """
        B, N, _ = directions.shape
        S = n_samples or self.n_ray_samples
        styles = fg.styles(ws_fg)
        ray_length = directions.norm(dim=-1, keepdim=True)                                  # [B, N, 1]

        def evaluate(tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            depth = self.depth(tau)
            points = origins[:, None, None, :] + depth[..., None] * directions[:, :, None, :]
            hidden, sigma = fg.trunk(points.reshape(B, -1, 3), styles)
            return hidden.reshape(B, N, tau.shape[-1], -1), sigma.reshape(B, N, -1)

        # The last coarse sample closes every ray (also after merging: the fine samples lie before it).
        # Its interval is 0, so its alpha and weight are 0 whatever the field returns there: it is not
        # evaluated, and any finite density stands in.
        tau = torch.linspace(0.0, 1.0, S, dtype=directions.dtype, device=directions.device).expand(B, N, S)
        hidden, sigma = evaluate(tau[..., :-1])
        sigma = torch.cat([sigma, torch.zeros_like(sigma[..., :1])], dim=-1)
        depth = self.depth(tau)
        weights, transmittance = alpha_composite_weights(sigma, foreground_deltas(depth, ray_length))

        if hierarchical:
            with torch.no_grad():
                mids = 0.5 * (tau[..., 1:] + tau[..., :-1])
                tau_fine = sample_pdf_deterministic(mids, weights[..., 1:-1], S)
            hidden_fine, sigma_fine = evaluate(tau_fine)
            tau, order = torch.sort(torch.cat([tau_fine, tau], dim=-1), dim=-1)
            depth = torch.cat([self.depth(tau_fine), depth], dim=-1).gather(-1, order)
            sigma = torch.cat([sigma_fine, sigma], dim=-1).gather(-1, order)
            weights, transmittance = alpha_composite_weights(sigma, foreground_deltas(depth, ray_length))
            # The weighted sum does not depend on the order: take each sample's weight back to the
            # (fine, coarse) order instead of sorting the much larger hidden features.
            unsorted = weights.gather(-1, torch.argsort(order, dim=-1))
            fg_hidden = ((unsorted[..., :S, None] * hidden_fine).sum(2)
                         + (unsorted[..., S:-1, None] * hidden).sum(2))
        else:
            fg_hidden = (weights[..., :-1, None] * hidden).sum(2)

        fg_features = fg.head(fg_hidden, weights.sum(-1, keepdim=True), styles)

        # Background: samples uniform in the (negated) inverse radius, nearest first; the last one is
        # opaque so the background weights sum to one.
        s = torch.linspace(-1.0, 0.0, self.n_bg_samples, dtype=directions.dtype, device=directions.device) * self.bg_start
        unit_dirs = directions / ray_length
        bg_points = inverse_sphere_points(origins, unit_dirs, -s)                           # [B, N, Sb, 4]
        bg_hidden, bg_sigma = bg.trunk(bg_points.reshape(B, -1, 4), bg_code)
        bg_hidden, bg_sigma = bg_hidden.reshape(B, N, self.n_bg_samples, -1), bg_sigma.reshape(B, N, -1)
        bg_deltas = torch.cat([s[1:] - s[:-1], s[-1:]]).expand_as(bg_sigma)   # the last one is unused
        bg_weights, _ = alpha_composite_weights(bg_sigma, bg_deltas, opaque_last=True)
        bg_features = bg.head((bg_weights[..., None] * bg_hidden).sum(2), bg_weights.sum(-1, keepdim=True))

        return RenderedRays(features=fg_features + transmittance[..., None] * bg_features, fg_depth=depth,
                            fg_weights=weights, bg_lambda=transmittance, bg_weights=bg_weights)

