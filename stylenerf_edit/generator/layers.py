"""Primitive layers of the StyleNeRF generator, with the official parameter names and equalised-lr gains.

Every layer stores its weights exactly as the official checkpoints do (so state dicts load by name) and
applies the runtime gains explicitly. Per-point layers work on ``[B, P, C]`` matrices: the official code
runs the same maths as 1x1 convolutions over ``[B*S, C, 32, 32]`` images, which is much slower on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2


def lrelu_gain(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) followed by the StyleGAN gain sqrt(2)."""
    return F.leaky_relu(x, LRELU_SLOPE) * SQRT2


class _LreluClampInplace(torch.autograd.Function):
    """``x <- clamp(lrelu(x) * gain, -clamp, clamp)`` in place, with a backward that reads only the output.

    The output has the sign of the input and sits at +-clamp exactly where the input was clamped, so (as
    in the official bias_act plugin) nothing else is kept for the backward. On the large upsampler maps
    this saves several full-size temporaries per layer in both passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gain: float, clamp: float | None) -> torch.Tensor:
        F.leaky_relu_(x, LRELU_SLOPE)
        x.mul_(gain)
        if clamp is not None:
            x.clamp_(-clamp, clamp)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.gain, ctx.clamp = gain, clamp
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (y,) = ctx.saved_tensors
        grad = torch.ops.aten.leaky_relu_backward(grad, y, LRELU_SLOPE, True).mul_(ctx.gain)
        if ctx.clamp is not None:
            # Zero where |y| == clamp; written into ``grad`` itself to avoid one more full-size tensor.
            torch.ops.aten.hardtanh_backward.grad_input(grad, y, -ctx.clamp, ctx.clamp, grad_input=grad)
        return grad, None, None


def lrelu_clamp_(x: torch.Tensor, gain: float = SQRT2, clamp: float | None = None) -> torch.Tensor:
    """In place ``clamp(lrelu(x) * gain, -clamp, clamp)`` of a fresh tensor (not a view), any shape.

    First-order gradients only. An in-place op on a view would make autograd copy the whole gradient.
    """
    return _LreluClampInplace.apply(x, gain, clamp)


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str, clamp: float | None = None,
             channel_dim: int = 1) -> torch.Tensor:
    """``clamp(act(x + b) * gain, -clamp, clamp)`` with gain sqrt(2) for lrelu and 1 for linear."""
    if bias is not None:
        shape = [1] * x.ndim
        shape[channel_dim] = -1
        x = x + bias.reshape(shape)
    if activation == "lrelu":
        x = lrelu_gain(x)
    elif activation == "relu":
        x = F.relu(x)
    elif activation != "linear":
        raise ValueError(f"unknown activation {activation!r}")
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def demodulated_weight(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Per-sample modulated and demodulated weight.

    Args:
        weight: [O, I, k, k].
        styles: [B, I].
    Returns:
        [B, O, I, k, k] with ``W'[n,o] = W[o] * s[n] / sqrt(sum(W[o] * s[n])^2 + 1e-8)``.
    """
    assert weight.ndim == 4 and styles.ndim == 2 and styles.shape[1] == weight.shape[1]
    w = weight[None] * styles[:, None, :, None, None]
    return w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Equalised-lr dense layer: ``y = act(x @ (W * lr/sqrt(in)).T + b * lr)``."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == self.in_features, f"expected [..., {self.in_features}], got {tuple(x.shape)}"
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return bias_act(x, None, self.activation)


class Conv2dLayer(nn.Module):
    """Unmodulated convolution (official ``Conv2dLayer``): weight gain 1/sqrt(in*k*k), bias, activation.

    Used for the NeRF ``to_rgb`` heads (applied per point) and the nn_cat adapters (applied per pixel).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, activation: str = "linear"):
        super().__init__()
        self.in_channels, self.out_channels, self.activation = in_channels, out_channels, activation
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, I, H, W] -> [B, O, H, W]."""
        k = self.weight.shape[-1]
        x = F.conv2d(x, self.weight * self.weight_gain, padding=k // 2)
        return bias_act(x, self.bias, self.activation)

    def forward_points(self, x: torch.Tensor, bias_scale: torch.Tensor | None = None) -> torch.Tensor:
        """[..., I] -> [..., O] for a 1x1 kernel; ``bias_scale`` [..., 1] multiplies the bias (see nerf.py)."""
        assert self.weight.shape[-1] == 1, "per-point application needs a 1x1 kernel"
        y = x @ (self.weight[:, :, 0, 0] * self.weight_gain).T
        y = y + self.bias if bias_scale is None else y + bias_scale * self.bias
        return bias_act(y, None, self.activation)


class StyledPointLayer(nn.Module):
    """Styled NeRF layer (official ``Style2Layer`` with w): modulated + demodulated dense layer, lrelu*sqrt2.

    Weight [O, I, 1, 1] as stored by the official code; ``affine`` maps w to the I input styles.
    """

    def __init__(self, in_features: int, out_features: int, w_dim: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.affine = FullyConnectedLayer(w_dim, in_features, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_features, in_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """w [B, w_dim] -> per-sample transposed weight [B, I, O], ready for ``x @ W``."""
        return demodulated_weight(self.weight, self.affine(w))[:, :, :, 0, 0].transpose(1, 2)

    def forward(self, x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
        """x [B, P, I], weight_t [B, I, O] from :meth:`modulated_weight` -> [B, P, O]."""
        return lrelu_clamp_(torch.baddbmm(self.bias, x, weight_t), SQRT2)


class StyledPointHead(nn.Module):
    """Styled linear output of the NeRF (official ``ToRGBLayer`` with w): modulation without demodulation."""

    def __init__(self, in_features: int, out_features: int, w_dim: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.affine = FullyConnectedLayer(w_dim, in_features, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_features, in_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = 1.0 / math.sqrt(in_features)

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """w [B, w_dim] -> [B, I, O]: ``W[o, i] * affine(w)[i] / sqrt(I)``, transposed."""
        styles = self.affine(w) * self.weight_gain
        return (self.weight[None, :, :, 0, 0] * styles[:, None, :]).transpose(1, 2)

    def forward(self, x: torch.Tensor, weight_t: torch.Tensor, bias_scale: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, P, I] -> [B, P, O]; ``bias_scale`` [B, P, 1] multiplies the bias (see nerf.py)."""
        y = torch.bmm(x, weight_t)
        return y + self.bias if bias_scale is None else y + bias_scale * self.bias


class PointLayer(nn.Module):
    """Unstyled NeRF layer (official ``Style2Layer`` without w): plain ``ReLU(x W^T + b)``, no gain."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.linear(x, self.weight, self.bias))


class PointHead(nn.Module):
    """Unstyled linear NeRF output (official ``ToRGBLayer`` without w): ``x W^T + b``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor, bias_scale: torch.Tensor | None = None) -> torch.Tensor:
        y = x @ self.weight.T
        return y + self.bias if bias_scale is None else y + bias_scale * self.bias
