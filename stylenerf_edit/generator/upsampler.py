"""The 2-D upsampler: StyleGAN2 skip blocks with learned ``nn_cat`` upsampling, from the NeRF grid to the image.

Resampling filters are the fixed [1, 3, 3, 1] kernel of the official checkpoints, written as separable
shifts with the official zero padding (two before, one after) rather than as generic FIR convolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Conv2dLayer, FullyConnectedLayer, bias_act, demodulated_weight


def _shift_sum(x: torch.Tensor, dim: int, taps: tuple[float, ...], pad: tuple[int, int]) -> torch.Tensor:
    """Correlate ``x`` with ``taps`` along ``dim`` after zero padding ``pad`` (before, after)."""
    padding = [0, 0] * (x.ndim - 1 - dim % x.ndim) + list(pad)
    xp = F.pad(x, padding)
    n = x.shape[dim] + pad[0] + pad[1] - len(taps) + 1
    return sum(t * xp.narrow(dim, i, n) for i, t in enumerate(taps))


def blur_2x2(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> same shape: separable [1, 3, 3, 1]/8 filter, zero padding 2 before and 1 after."""
    taps = (0.125, 0.375, 0.375, 0.125)
    return _shift_sum(_shift_sum(x, -1, taps, (2, 1)), -2, taps, (2, 1))


def upsample_image(img: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 2H, 2W]: zero insertion and the [1, 3, 3, 1]/4 filter per axis.

    Per axis, ``y[2i] = (x[i-1] + 3 x[i]) / 4`` and ``y[2i+1] = (3 x[i] + x[i+1]) / 4`` with zeros outside.
    """
    for dim in (-1, -2):
        even = _shift_sum(img, dim, (0.25, 0.75), (1, 0))
        odd = _shift_sum(img, dim, (0.75, 0.25), (0, 1))
        img = torch.stack([even, odd], dim=dim).flatten(dim - 1, dim)
    return img


def nearest_2x(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 2H, 2W] by pixel repetition."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def neighbour_means_2x(x: torch.Tensor) -> torch.Tensor:
    """The second nn_cat branch: every pixel's 2x2 children are means of two of its 4-neighbours.

    top-left (left+up)/2, top-right (up+right)/2, bottom-left (left+down)/2, bottom-right (right+down)/2,
    with zeros beyond the border. [B, C, H, W] -> [B, C, 2H, 2W].
    """
    p = F.pad(x, (1, 1, 1, 1))
    left, right = p[..., 1:-1, :-2], p[..., 1:-1, 2:]
    up, down = p[..., :-2, 1:-1], p[..., 2:, 1:-1]
    top = torch.stack([left + up, up + right], dim=-1)          # [B, C, H, W, 2]
    bottom = torch.stack([left + down, right + down], dim=-1)
    children = torch.stack([top, bottom], dim=-3) * 0.5          # [B, C, H, 2, W, 2]
    B, C, H, _, W, _ = children.shape
    return children.reshape(B, C, 2 * H, 2 * W)


def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                   input_gain: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Per-sample modulated convolution (``'same'`` padding).

    Args:
        x: [B, I, H, W].
        weight: [O, I, k, k].
        styles: [B, I].
        demodulate: normalise each output filter to unit norm (StyleGAN2).
        input_gain: scalar applied to the input (the magnitude-EMA normalisation), folded into the weights.
    Returns:
        [B, O, H, W].
    """
    B, I, H, W = x.shape
    O, _, k, _ = weight.shape
    assert styles.shape == (B, I), f"styles {tuple(styles.shape)} do not match input {tuple(x.shape)}"
    w = demodulated_weight(weight, styles) if demodulate else weight[None] * styles[:, None, :, None, None]
    w = w * input_gain
    if k == 1:
        return torch.bmm(w[:, :, :, 0, 0], x.reshape(B, I, H * W)).reshape(B, O, H, W)
    y = F.conv2d(x.reshape(1, B * I, H, W), w.reshape(B * O, I, k, k), padding=k // 2, groups=B)
    return y.reshape(B, O, H, W)


class SynthesisLayer(nn.Module):
    """Modulated conv + bias + lrelu*sqrt2 + clamp; ``up=2`` adds the learned nn_cat upsampling and blur.

    Parameters (official names): ``weight`` [O, I, k, k], ``bias`` [O], ``affine`` (w -> I styles), buffer
    ``w_avg`` [] (input magnitude EMA; the input is divided by its square root), and for ``up=2`` the
    ``adapter`` pair of 1x1 convs ``2O -> O/4 -> O``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, up: int = 1,
                 conv_clamp: float | None = 256, adapter_channels: int | None = None):
        super().__init__()
        assert up in (1, 2)
        self.in_channels, self.out_channels, self.up, self.conv_clamp = in_channels, out_channels, up, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("w_avg", torch.ones([]))
        if up == 2:
            hidden = adapter_channels or out_channels // 4
            self.adapter = nn.Sequential(Conv2dLayer(2 * out_channels, hidden, activation="lrelu"),
                                         Conv2dLayer(hidden, out_channels, activation="linear"))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [B, I, H, W], w [B, w_dim] -> [B, O, up*H, up*W]."""
        assert x.shape[1] == self.in_channels, f"expected {self.in_channels} channels, got {tuple(x.shape)}"
        x = modulated_conv(x, self.weight, self.affine(w), demodulate=True, input_gain=self.w_avg.rsqrt())
        if self.up == 2:
            x = self._nn_cat_upsample(x)
        return bias_act(x, self.bias, "lrelu", self.conv_clamp)

    def _nn_cat_upsample(self, x: torch.Tensor) -> torch.Tensor:
        """``xa + adapter(cat[xa, xb])`` then blur, with xa the nearest and xb the neighbour-mean upsampling.

        Both upsamplings are linear and per channel, so the adapter's first 1x1 conv is applied at the low
        resolution (to O/4 channels) before upsampling: 4x less work, the same result.
        """
        first, second = self.adapter
        weight = first.weight[:, :, 0, 0] * first.weight_gain                  # [O/4, 2O]
        C = x.shape[1]
        B, _, H, W = x.shape
        flat = x.reshape(B, C, H * W)
        to_nearest = (weight[:, :C] @ flat).reshape(B, -1, H, W)
        to_means = (weight[:, C:] @ flat).reshape(B, -1, H, W)
        hidden = bias_act(nearest_2x(to_nearest) + neighbour_means_2x(to_means), first.bias, first.activation)
        return blur_2x2(nearest_2x(x) + second(hidden))


class ToRGBLayer(nn.Module):
    """Modulated conv without demodulation to image channels, plus bias, clamped (official ``torgb``)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = 256):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = modulated_conv(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(y, self.bias, "linear", self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One doubling of resolution: conv0 (up 2), conv1, ToRGB added to the upsampled skip image.

    Consumes 3 rows of ws; the ToRGB row is shared with the next block's conv0 (``num_ws`` = 2 per block
    plus 1 for the last).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int = 3,
                 kernel_size: int = 1, conv_clamp: float | None = 256, adapter_channels: int | None = None):
        super().__init__()
        self.resolution = resolution
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, kernel_size, up=2, conv_clamp=conv_clamp,
                                    adapter_channels=adapter_channels)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, kernel_size, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(self, x: torch.Tensor, img: torch.Tensor, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, I, R/2, R/2], img [B, 3, R/2, R/2], ws [B, 3, w_dim] -> x [B, O, R, R], img [B, 3, R, R]."""
        assert ws.ndim == 3 and ws.shape[1] == 3
        x = self.conv0(x, ws[:, 0])
        x = self.conv1(x, ws[:, 1])
        img = upsample_image(img) + self.torgb(x, ws[:, 2]).float()
        assert x.shape[-1] == self.resolution and img.shape[-1] == self.resolution
        return x, img
