"""Generator behaviour beyond parity: explicit inputs, determinism, batching, gradients, options."""

from __future__ import annotations

import pytest
import torch

from stylenerf_edit.generator import Camera, Generator, GeneratorConfig
from stylenerf_edit.generator.camera import intrinsics_inverse, world_matrix


@pytest.fixture(scope="module")
def small() -> Generator:
    """A small random generator (64 px) with the FFHQ structure, for fast behavioural checks."""
    torch.manual_seed(0)
    cfg = GeneratorConfig(img_resolution=64, fg_hidden=32, fg_layers=3, feature_dim=32, bg_hidden=16, bg_layers=2,
                          block_channels=[32], n_ray_samples=6)
    return Generator(cfg).eval()


def inputs(G: Generator, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return G.mapping(G.sample_z(n, g), truncation_psi=0.8).detach(), G.sample_bg_code(n, g)


def test_shapes_and_num_ws(small: Generator) -> None:
    assert small.num_ws == 3 + 2 + 3
    ws, bg = inputs(small, 2, 0)
    assert ws.shape == (2, 8, 512)
    out = small.synthesize(ws, Camera(), bg)
    assert out.img.shape == (2, 3, 64, 64) and out.rgb_lr.shape == (2, 3, 32, 32) and out.feat_lr.shape == (2, 32, 32, 32)
    assert torch.isfinite(out.img).all()


def test_deterministic_and_seeded(small: Generator) -> None:
    ws, bg = inputs(small, 1, 5)
    ws2, bg2 = inputs(small, 1, 5)
    assert torch.equal(ws, ws2) and torch.equal(bg, bg2)
    with torch.no_grad():
        assert torch.equal(small.synthesize(ws, Camera(yaw=7), bg).img, small.synthesize(ws, Camera(yaw=7), bg).img)
    assert not torch.equal(inputs(small, 1, 6)[0], ws)


def test_batch_equals_single_samples(small: Generator) -> None:
    ws, bg = inputs(small, 3, 1)
    cams = [Camera(yaw=-15), Camera(pitch=8), Camera(yaw=30, pitch=-5)]
    with torch.no_grad():
        batch = small.synthesize(ws, cams, bg).img
        single = torch.cat([small.synthesize(ws[i:i + 1], cams[i], bg[i:i + 1]).img for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)


def test_camera_and_background_change_the_image(small: Generator) -> None:
    ws, bg = inputs(small, 1, 2)
    with torch.no_grad():
        base = small.synthesize(ws, Camera(), bg).img
        turned = small.synthesize(ws, Camera(yaw=25), bg).img
        other_bg = small.synthesize(ws, Camera(), bg + 1.0).img
    assert (base - turned).abs().mean() > 1e-3 and (base - other_bg).abs().mean() > 1e-4


def test_gradients_reach_every_input(small: Generator) -> None:
    ws, bg = inputs(small, 1, 3)
    ws.requires_grad_(True)
    bg.requires_grad_(True)
    yaw = torch.tensor([10.0], requires_grad=True)
    pitch = torch.tensor([-3.0], requires_grad=True)
    cams = (world_matrix(yaw, pitch, torch.ones(1)), intrinsics_inverse(torch.tensor([12.0])))
    small.synthesize(ws, cams, bg).img.square().mean().backward()
    assert (ws.grad.abs().sum(-1) > 0).all(), "every ws row must receive gradient with NeRF gradients on"
    assert bg.grad.abs().sum() > 0 and yaw.grad.abs() > 0 and pitch.grad.abs() > 0


def test_frozen_nerf_mode_stops_nerf_gradients(small: Generator) -> None:
    ws, bg = inputs(small, 1, 4)
    ws.requires_grad_(True)
    small.synthesize(ws, Camera(), bg, nerf_grad=False).img.sum().backward()
    n_fg = small.cfg.fg_num_ws
    assert (ws.grad[0, :n_fg] == 0).all() and (ws.grad[0, n_fg:].abs().sum(-1) > 0).all()


def test_coarse_only_switch(small: Generator) -> None:
    ws, bg = inputs(small, 1, 8)
    with torch.no_grad():
        full = small.synthesize(ws, Camera(), bg)
        coarse = small.synthesize(ws, Camera(), bg, hierarchical=False)
    assert full.rays.fg_depth.shape[-1] == 12 and coarse.rays.fg_depth.shape[-1] == 6
    assert torch.all(full.rays.fg_depth[..., 1:] >= full.rays.fg_depth[..., :-1])
    total = full.rays.fg_weights.sum(-1) + full.rays.bg_lambda
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)
    torch.testing.assert_close(full.rays.bg_weights.sum(-1), torch.ones_like(total), atol=1e-6, rtol=0)


def test_max_resolution_stops_the_upsampler_at_that_blocks_image() -> None:
    torch.manual_seed(1)
    G = Generator(GeneratorConfig(img_resolution=128, fg_hidden=32, fg_layers=3, feature_dim=32, bg_hidden=16,
                                  bg_layers=2, block_channels=[32, 16], n_ray_samples=6)).eval()
    ws, bg = inputs(G, 1, 3)
    with torch.no_grad():
        full = G.synthesize(ws, Camera(), bg, keep_blocks=True)
        preview = G.synthesize(ws, Camera(), bg, max_resolution=64, keep_blocks=True)
    assert full.img.shape[-1] == 128 and preview.img.shape[-1] == 64 and list(preview.block_outputs) == ["b64"]
    torch.testing.assert_close(preview.img, full.block_outputs["b64"][1].float())


def test_a_frozen_nerf_output_upsampled_again_is_the_full_render() -> None:
    """render_lowres + upsample is forward; the NeRF half rendered once serves other ws rows of the upsampler."""
    from stylenerf_edit.generator.camera import stack_cameras

    torch.manual_seed(2)
    G = Generator(GeneratorConfig(img_resolution=128, fg_hidden=32, fg_layers=3, feature_dim=32, bg_hidden=16,
                                  bg_layers=2, block_channels=[32, 16], n_ray_samples=6)).eval()
    ws, bg = inputs(G, 2, 4)
    world, intr = stack_cameras([Camera(yaw=10.0), Camera(pitch=-5.0)])
    with torch.no_grad():
        low = G.synthesis.render_lowres(ws, world, intr, bg)
        torch.testing.assert_close(G.synthesis.upsample(low, ws).img, G.synthesis(ws, world, intr, bg).img)
        other = ws.clone()
        other[:, G.cfg.fg_num_ws:] += 0.5      # the upsampler's rows only: the NeRF's output is unchanged
        torch.testing.assert_close(G.synthesis.upsample(low, other).img, G.synthesis(other, world, intr, bg).img)
        assert not torch.allclose(G.synthesis.upsample(low, other).img, G.synthesis.upsample(low, ws).img)
    with pytest.raises(AssertionError, match="ws"):
        G.synthesis.upsample(low, ws[:1])


def test_fp16_is_gpu_only(small: Generator) -> None:
    ws, bg = inputs(small, 1, 0)
    if torch.cuda.is_available():
        pytest.skip("GPU present")
    with pytest.raises(ValueError, match="GPU"):
        small.synthesize(ws, Camera(), bg, fp16=True)


def test_bad_shapes_are_caught(small: Generator) -> None:
    ws, bg = inputs(small, 2, 0)
    with pytest.raises(AssertionError, match="ws"):
        small.synthesize(ws[:, :-1], Camera(), bg)
    with pytest.raises(AssertionError, match="bg_code"):
        small.synthesize(ws, Camera(), bg[:, :5])
    with pytest.raises(ValueError, match="3 cameras for a batch of 2"):
        small.synthesize(ws, [Camera()] * 3, bg)


def test_config_json_round_trip(small: Generator) -> None:
    import json

    d = json.loads(json.dumps(small.cfg.to_dict()))
    assert GeneratorConfig.from_dict(d) == small.cfg
    with pytest.raises(ValueError, match="unknown generator config keys: bogus"):
        GeneratorConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(img_resolution=96)
