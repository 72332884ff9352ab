"""The 2-D upsampler: StyleGAN2 skip blocks with learned ``nn_cat`` upsampling, from the NeRF grid to the image.

Layout: feature maps are ``[B, C, H, W]`` tensors stored channels-last, so that a 1x1 convolution is one
matrix product on the ``[B, H*W, C]`` pixel matrix (:func:`pixels`, :func:`image`: views, no copies)
and the fixed depthwise filters run on the CPU's fast channels-last path. Every 2x upsampling, including
nn_cat's, is a depthwise stride-2 transposed convolution with the official [1, 3, 3, 1] kernel and zero
padding: it writes the large output once, where shifted slices and sums make a new full-size tensor per
term. Activations run in place on fresh matrix products (:func:`layers.lrelu_clamp_`). The custom autograd
functions give first-order gradients (all that rendering, inversion and fine-tuning need).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SQRT2, Conv2dLayer, FullyConnectedLayer, bias_act, demodulated_weight, lrelu_clamp_

# Per-axis filters of the 2x upsamplings, as transposed-convolution taps (see ``upsample_2x``).
UPSAMPLE_TAPS = (0.25, 0.75, 0.75, 0.25)                       # zero insertion + [1, 3, 3, 1] / 4
NEAREST_BLUR_TAPS = (0.0, 0.125, 0.5, 0.75, 0.5, 0.125)        # blur_2x2 after nearest 2x: [1, 4, 6, 4, 1] / 8
# nn_cat: nearest 2x, and the 2x2 children as means of two of the 4-neighbours (2-D, not separable).
NEAREST_KERNEL = ((0, 0, 0, 0), (0, 1, 1, 0), (0, 1, 1, 0), (0, 0, 0, 0))
NEIGHBOUR_MEANS_KERNEL = ((0, .5, .5, 0), (.5, 0, 0, .5), (.5, 0, 0, .5), (0, .5, .5, 0))


def pixels(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C] pixel matrix; a view for channels-last and for contiguous x."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, H * W, C)


def image(p: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[B, H*W, C] pixel matrix -> [B, C, H, W] view, stored channels-last."""
    B, _, C = p.shape
    return p.reshape(B, H, W, C).permute(0, 3, 1, 2)


def _batched_weight_grad(grad: torch.Tensor, x: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """``grad^T @ x`` per sample ([B, N, O], [B, N, I] -> [B, O, I]), reduced over N in chunks of ``rows``.

    One product over all pixels is a long, thin reduction that BLAS blocks badly for few output channels
    (ToRGB: 3x slower); chunked products plus a sum are never slower for the other shapes.
    """
    B, N, O = grad.shape
    chunks = N // rows if N % rows == 0 else 1
    parts = torch.bmm(grad.reshape(B * chunks, -1, O).mT, x.reshape(B * chunks, -1, x.shape[-1]))
    return parts.reshape(B, chunks, O, -1).sum(1)


class _PixelLinear(torch.autograd.Function):
    """``x @ w^T`` per sample, with the weight gradient of :func:`_batched_weight_grad`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.bmm(x, w.mT)   # under autocast in the forward's precision

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, w = (t.to(grad.dtype) for t in ctx.saved_tensors)
        grad_x = torch.bmm(grad, w) if ctx.needs_input_grad[0] else None
        grad_w = _batched_weight_grad(grad, x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def pixel_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-sample 1x1 convolution of pixel matrices: x [B, N, I], w [B, O, I] -> [B, N, O]."""
    return _PixelLinear.apply(x, w)


class _AccumulatePixelLinear(torch.autograd.Function):
    """``pixels(y) += x @ w^T`` in place on a channels-last map y: no full-size sum is allocated."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        assert y.is_contiguous(memory_format=torch.channels_last), "pixels(y) must be a view of y"
        ctx.save_for_backward(x, w)
        pixels(y).baddbmm_(x.to(y.dtype), w.mT.to(y.dtype))
        ctx.mark_dirty(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x, w = (t.to(grad.dtype) for t in ctx.saved_tensors)
        g = pixels(grad)
        grad_x = torch.bmm(g, w) if ctx.needs_input_grad[1] else None
        grad_w = _batched_weight_grad(g, x) if ctx.needs_input_grad[2] else None
        return grad, grad_x, grad_w


def accumulate_pixel_linear_(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """In place ``y += image(x @ w^T)``: y [B, O, H, W] channels-last, x [B, H*W, I], w [B, O, I]."""
    return _AccumulatePixelLinear.apply(y, x, w)


def _constant(values: tuple, like: torch.Tensor) -> torch.Tensor:
    """A small constant filter on ``like``'s device and dtype, copied there without waiting for the GPU."""
    return torch.tensor(values, dtype=like.dtype).to(like.device, non_blocking=True)


def _depthwise_weight(kernels: torch.Tensor, channels: int) -> torch.Tensor:
    """[n, K, K] kernels -> [channels * n, 1, K, K] conv weight cycling through the n kernels."""
    return kernels.repeat(channels, 1, 1)[:, None]


def blur_2x2(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> same shape: separable [1, 3, 3, 1]/8 filter with zero padding 2 before and 1 after.

    Per axis ``y[i] = (x[i-2] + 3 x[i-1] + 3 x[i] + x[i+1]) / 8``.
    """
    taps = _constant((0.125, 0.375, 0.375, 0.125, 0.0), x)
    weight = _depthwise_weight(torch.outer(taps, taps)[None], x.shape[1])
    return F.conv2d(x, weight, padding=2, groups=x.shape[1])


def upsample_2x(x: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 2H, 2W]: zero insertion, then the separable filter ``taps`` (length 2p + 2).

    Per axis ``y[n] = sum_i taps[n - 2i + p] x[i]`` with zeros outside.
    """
    p = len(taps) // 2 - 1
    assert len(taps) == 2 * p + 2, "the output must be exactly twice the input size"
    t = _constant(taps, x)
    weight = _depthwise_weight(torch.outer(t, t)[None], x.shape[1])
    return F.conv_transpose2d(x, weight, stride=2, padding=p, groups=x.shape[1])


def upsample_image(img: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 2H, 2W]: zero insertion and the [1, 3, 3, 1]/4 filter per axis.

    Per axis, ``y[2i] = (x[i-1] + 3 x[i]) / 4`` and ``y[2i+1] = (3 x[i] + x[i+1]) / 4`` with zeros outside.
    """
    return upsample_2x(img, UPSAMPLE_TAPS)


def nn_cat_2x(pairs: torch.Tensor) -> torch.Tensor:
    """The two nn_cat upsamplings, summed: nearest-neighbour of ``a`` plus neighbour means of ``b``.

    Channels are interleaved ``(a_0, b_0, a_1, b_1, ...)``. Neighbour means: every pixel's 2x2 children
    are top-left (left+up)/2, top-right (up+right)/2, bottom-left (left+down)/2, bottom-right
    (right+down)/2 of its 4-neighbours, with zeros beyond the border. [B, 2C, H, W] -> [B, C, 2H, 2W].
    """
    C = pairs.shape[1] // 2
    kernels = _constant((NEAREST_KERNEL, NEIGHBOUR_MEANS_KERNEL), pairs)
    return F.conv_transpose2d(pairs, _depthwise_weight(kernels, C), stride=2, padding=1, groups=C)


def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                   input_gain: torch.Tensor | float = 1.0, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample modulated convolution (``'same'`` padding) plus an optional bias, as a pixel matrix.

    Args:
        x: [B, I, H, W].
        weight: [O, I, k, k].
        styles: [B, I].
        demodulate: normalise each output filter to unit norm (StyleGAN2).
        input_gain: scalar applied to the input (the magnitude-EMA normalisation), folded into the weights.
        bias: [O], added to every pixel.
    Returns:
        [B, H*W, O] (see :func:`image`): a new tensor, not a view, so that callers can apply activations
        in place (an in-place op on a view makes autograd copy the whole gradient in the backward).
    """
    B, I, H, W = x.shape
    O, _, k, _ = weight.shape
    assert styles.shape == (B, I), f"styles {tuple(styles.shape)} do not match input {tuple(x.shape)}"
    w = demodulated_weight(weight, styles) if demodulate else weight[None] * styles[:, None, :, None, None]
    w = w * input_gain
    if k == 1:
        y = pixel_linear(pixels(x), w[:, :, :, 0, 0])
    else:
        y = F.conv2d(x.reshape(1, B * I, H, W), w.reshape(B * O, I, k, k), padding=k // 2, groups=B)
        y = pixels(y.reshape(B, O, H, W)).contiguous()
    return y if bias is None else y.add_(bias.to(y.dtype))


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
        if up == 2:  # created before ``affine`` so the state dict lists entries in the official order
            hidden = adapter_channels or out_channels // 4
            self.adapter = nn.Sequential(Conv2dLayer(2 * out_channels, hidden, activation="lrelu"),
                                         Conv2dLayer(hidden, out_channels, activation="linear"))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("w_avg", torch.ones([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [B, I, H, W], w [B, w_dim] -> [B, O, up*H, up*W] (channels-last)."""
        assert x.shape[1] == self.in_channels, f"expected {self.in_channels} channels, got {tuple(x.shape)}"
        B, _, H, W = x.shape
        styles, input_gain = self.affine(w), self.w_avg.rsqrt()
        if self.up == 1:
            y = modulated_conv(x, self.weight, styles, True, input_gain, bias=self.bias)
            return image(lrelu_clamp_(y, SQRT2, self.conv_clamp), H, W)
        y = self._nn_cat_upsample(modulated_conv(x, self.weight, styles, True, input_gain), H, W)
        return lrelu_clamp_(y, SQRT2, self.conv_clamp)

    def _nn_cat_upsample(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """``blur(xa + adapter(cat[xa, xb])) + bias`` with xa the nearest and xb the neighbour-mean upsampling.

        Everything but the adapter's lrelu is linear, so the same result is computed with less work:
        the adapter's first 1x1 conv runs at the low resolution before upsampling; the blur commutes with
        its second 1x1 conv, so its O/4-channel input is blurred instead of the O-channel sum; and blur
        after nearest upsampling is one upsampling filter (``NEAREST_BLUR_TAPS``), applied to
        ``x + second.bias`` because the blurred constant bias map has the same zero-padding border.
        x [B, H*W, O] (pixel matrix) -> [B, O, 2H, 2W] (channels-last), before the activation.
        """
        first, second = self.adapter
        C = x.shape[2]
        # Rows interleaved (xa, xb) per hidden channel for nn_cat_2x; the adapter bias rides on the xa
        # rows, since the nearest upsampling of a + b is that of a, plus b.
        w1 = first.weight[:, :, 0, 0] * first.weight_gain                      # [O/4, 2O]: xa part, xb part
        w1 = torch.stack([w1[:, :C], w1[:, C:]], dim=1).flatten(0, 1)
        b1 = torch.stack([first.bias, torch.zeros_like(first.bias)], dim=1).flatten()
        pairs = image(F.linear(x, w1, b1), H, W)                               # [B, O/2, H, W]
        hidden = blur_2x2(lrelu_clamp_(nn_cat_2x(pairs)))                      # [B, O/4, 2H, 2W]
        y = upsample_2x(image(x + second.bias.to(x.dtype), H, W), NEAREST_BLUR_TAPS)
        y = y.contiguous(memory_format=torch.channels_last).add_(self.bias.to(y.dtype)[:, None, None])
        w2 = second.weight[:, :, 0, 0] * second.weight_gain                   # [O, O/4]
        return accumulate_pixel_linear_(y, pixels(hidden), w2.expand(y.shape[0], -1, -1))


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
        """x [B, I, H, W], w [B, w_dim] -> [B, O, H, W] (channels-last)."""
        y = modulated_conv(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False, bias=self.bias)
        return image(bias_act(y, None, "linear", self.conv_clamp), *x.shape[2:])


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
