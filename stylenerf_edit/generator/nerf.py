"""The two radiance fields: the styled foreground NeRF and the code-conditioned inverse-sphere background.

Both are split into a *trunk* evaluated per 3-D sample (hidden features and raw density) and a *head*
evaluated per ray. The official heads (``feat_out`` then ``to_rgb``) are affine, so compositing the
per-sample head outputs with volume weights equals applying the head once to the composited hidden
features, with each bias scaled by the sum of the weights. Doing it per ray removes the widest layers
from the per-sample work without changing the result.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import Conv2dLayer, PointHead, PointLayer, StyledPointHead, StyledPointLayer


def positional_encoding(p: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """[..., D] -> [..., 2*D*n_freqs]: per octave k, sin(2^k pi p) (D values) then cos(2^k pi p)."""
    scales = (2.0 ** torch.arange(n_freqs, dtype=p.dtype, device=p.device)) * math.pi
    x = p[..., None, :] * scales[:, None]                      # [..., L, D]
    return torch.cat([x.sin(), x.cos()], dim=-1).flatten(-2)   # [..., L, 2D] -> [..., 2DL]


class ForegroundNeRF(nn.Module):
    """Styled MLP: encoded point -> ``n_layers`` modulated layers -> density and features.

    Consumes ``num_ws = n_layers + 2`` rows of ws: one per hidden layer, then ``sigma_out``, ``feat_out``.
    """

    def __init__(self, w_dim: int, hidden: int, n_layers: int, feature_dim: int, n_freqs: int, img_channels: int = 3):
        super().__init__()
        self.n_freqs, self.hidden, self.feature_dim = n_freqs, hidden, feature_dim
        self.fc_in = StyledPointLayer(3 * 2 * n_freqs, hidden, w_dim)
        self.blocks = nn.ModuleList([StyledPointLayer(hidden, hidden, w_dim) for _ in range(n_layers - 1)])
        self.sigma_out = StyledPointHead(hidden, 1, w_dim)
        self.feat_out = StyledPointHead(hidden, feature_dim, w_dim)
        self.to_rgb = Conv2dLayer(feature_dim, img_channels)
        self.num_ws = n_layers + 2

    def styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """ws [B, num_ws, w_dim] -> per-sample weights of every layer (computed once per forward)."""
        assert ws.ndim == 3 and ws.shape[1] == self.num_ws, f"expected [B, {self.num_ws}, w], got {tuple(ws.shape)}"
        layers = [self.fc_in, *self.blocks, self.sigma_out, self.feat_out]
        return [layer.modulated_weight(ws[:, i]) for i, layer in enumerate(layers)]

    def trunk(self, points: torch.Tensor, styles: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """points [B, P, 3] -> hidden [B, P, hidden], raw density [B, P]."""
        h = positional_encoding(points, self.n_freqs)
        for layer, weight_t in zip([self.fc_in, *self.blocks], styles):
            h = layer(h, weight_t)
        return h, self.sigma_out(h, styles[-2])[..., 0]

    def head(self, hidden: torch.Tensor, weight_sum: torch.Tensor, styles: list[torch.Tensor]) -> torch.Tensor:
        """Composited hidden [B, N, hidden] and weight sums [B, N, 1] -> [B, N, 3 + feature_dim] (rgb, features)."""
        feat = self.feat_out(hidden, styles[-1], bias_scale=weight_sum)
        return torch.cat([self.to_rgb.forward_points(feat, bias_scale=weight_sum), feat], dim=-1)


class BackgroundNeRF(nn.Module):
    """Plain ReLU MLP on NeRF++ inverse-sphere points (x, y, z, 1/r), conditioned on a background code."""

    def __init__(self, code_dim: int, hidden: int, n_layers: int, feature_dim: int, n_freqs: int, img_channels: int = 3):
        super().__init__()
        self.n_freqs, self.code_dim, self.hidden, self.feature_dim = n_freqs, code_dim, hidden, feature_dim
        self.fc_in = PointLayer(4 * 2 * n_freqs + code_dim, hidden)
        self.blocks = nn.ModuleList([PointLayer(hidden, hidden) for _ in range(n_layers - 1)])
        self.sigma_out = PointHead(hidden, 1)
        self.feat_out = PointHead(hidden, feature_dim)
        self.to_rgb = Conv2dLayer(feature_dim, img_channels)

    def trunk(self, points: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [B, P, 4], code [B, code_dim] -> hidden [B, P, hidden], raw density [B, P]."""
        assert code.ndim == 2 and code.shape[1] == self.code_dim, \
            f"expected background code [B, {self.code_dim}], got {tuple(code.shape)}"
        enc = positional_encoding(points, self.n_freqs)
        n_enc = enc.shape[-1]
        # The code is constant along a sample's rays: fold its share of fc_in into a per-sample bias.
        code_bias = code @ self.fc_in.weight[:, n_enc:].T + self.fc_in.bias            # [B, hidden]
        h = torch.relu(torch.baddbmm(code_bias[:, None, :], enc, self.fc_in.weight[:, :n_enc].T.expand(len(enc), -1, -1)))
        for layer in self.blocks:
            h = layer(h)
        return h, self.sigma_out(h)[..., 0]

    def head(self, hidden: torch.Tensor, weight_sum: torch.Tensor) -> torch.Tensor:
        """Composited hidden [B, N, hidden] and weight sums [B, N, 1] -> [B, N, 3 + feature_dim]."""
        feat = self.feat_out(hidden, bias_scale=weight_sum)
        return torch.cat([self.to_rgb.forward_points(feat, bias_scale=weight_sum), feat], dim=-1)
