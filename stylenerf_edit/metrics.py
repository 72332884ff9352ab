"""Image-similarity metrics on generator-range images ([-1, 1], [B, C, H, W])."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image [B], with both images mapped to [0, 1] and clipped."""
    assert a.shape == b.shape and a.ndim == 4
    mse = (((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2) ** 2).mean(dim=(1, 2, 3))
    return -10 * torch.log10(mse.clamp(min=1e-12))


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image [B] (Wang et al. 2004: Gaussian window 11, sigma 1.5, K = 0.01, 0.03),
    on images mapped to [0, 1], averaged over channels and valid window positions."""
    assert a.shape == b.shape and a.ndim == 4
    # float64: the variance terms are differences of nearly equal means, too lossy in float32
    x, y = (a.double().clamp(-1, 1) + 1) / 2, (b.double().clamp(-1, 1) + 1) / 2
    C = x.shape[1]
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    kx = g.reshape(1, 1, 1, -1).repeat(C, 1, 1, 1)
    ky = g.reshape(1, 1, -1, 1).repeat(C, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=C), ky, groups=C)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).to(a.dtype)
