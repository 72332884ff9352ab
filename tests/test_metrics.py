"""PSNR and SSIM against hand-computed values."""

from __future__ import annotations

import math

import torch

from stylenerf_edit.metrics import psnr, ssim


def test_psnr_known_values() -> None:
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[0] += 0.2                      # 0.1 in [0, 1] units -> MSE 0.01 -> 20 dB
    b[1] += 0.02                     # -> 40 dB
    torch.testing.assert_close(psnr(a, b), torch.tensor([20.0, 40.0]), atol=1e-4, rtol=0)


def test_ssim_identity_and_ordering() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(ssim(a, a), torch.ones(2))
    slightly = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    heavily = (a + 0.5 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    s1, s2 = ssim(a, slightly), ssim(a, heavily)
    assert (s1 > s2).all() and (s1 < 1).all() and (s2 > -1).all()


def test_ssim_of_a_constant_offset_matches_the_luminance_term() -> None:
    a = torch.full((1, 1, 16, 16), -0.2)   # 0.4 in [0, 1]
    b = torch.full((1, 1, 16, 16), 0.2)    # 0.6
    c1 = 0.01 ** 2
    expected = (2 * 0.4 * 0.6 + c1) / (0.4 ** 2 + 0.6 ** 2 + c1)
    assert math.isclose(float(ssim(a, b)), expected, rel_tol=1e-5)
