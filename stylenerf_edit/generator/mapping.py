"""Mapping network z -> w (StyleGAN2 style, lr multiplier 0.01) with truncation around ``w_avg``."""

from __future__ import annotations

import torch
from torch import nn

from .layers import FullyConnectedLayer


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row of [B, D] to unit mean square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """``w_avg + psi * (w - w_avg)`` on all rows, or on the first ``cutoff`` rows only.

    Args:
        ws: [B, num_ws, w_dim].
        w_avg: [w_dim].
    """
    assert ws.ndim == 3 and w_avg.shape == ws.shape[2:]
    if psi == 1:
        return ws
    if cutoff is None:
        return w_avg.lerp(ws, psi)
    return torch.cat([w_avg.lerp(ws[:, :cutoff], psi), ws[:, cutoff:]], dim=1)


class MappingNetwork(nn.Module):
    """z [B, z_dim] -> ws [B, num_ws, w_dim]; ``w_avg`` is the training-time running mean of w."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            self.add_module(f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu",
                                                          lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"expected z [B, {self.z_dim}], got {tuple(z.shape)}"
        x = normalize_2nd_moment(z.to(torch.float32))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x[:, None, :].repeat(1, self.num_ws, 1)
        return truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)
