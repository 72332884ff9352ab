"""The shipped model: loads by name, reproduces its procedural world, renders from the CLI by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from stylenerf_edit.cli import main
from stylenerf_edit.generator import describe, load_generator
from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.metrics import psnr
from stylenerf_edit.synthetic.params import background_from_code, head_params_from_z
from stylenerf_edit.synthetic.predictor import AttributePredictor
from stylenerf_edit.synthetic.renderer import render_heads

PSNR_FLOOR_DB = 20.0  # bench/bundled.py measures the mean on 256 pairs; this is a regression floor


@pytest.fixture(scope="module")
def G():
    return load_generator()


@pytest.fixture(scope="module")
def pairs(G):
    """Eight held-out latents with cameras within +-30 degrees and their model and ground-truth renders."""
    g = torch.Generator().manual_seed(31337)
    z, code = torch.randn(8, 512, generator=g), G.sample_bg_code(8, g)
    cams = [Camera(yaw=float(y), pitch=float(p)) for y, p in zip(torch.linspace(-30, 30, 8), torch.linspace(8, -8, 8))]
    world, intr = stack_cameras(cams)
    with torch.no_grad():
        fake = G.synthesize(G.mapping(z), (world, intr), code).img
    real = render_heads(head_params_from_z(z), world, intr, G.img_resolution, background_from_code(code)).image
    return z, cams, fake, real


def test_loads_by_name_as_the_default(G) -> None:
    info = describe()
    assert info.name == "bundled:heads" and info.format == "safetensors"
    assert G.img_resolution == 64 and G.num_ws == 9 and G.cfg.z_dim == G.cfg.w_dim == 512
    size = sum(f.stat().st_size for f in Path(info.path).iterdir())
    assert size < 20 * 2 ** 20


def test_reproduces_its_world(pairs) -> None:
    _, _, fake, real = pairs
    assert psnr(fake, real).mean() >= PSNR_FLOOR_DB


def test_predictor_reads_the_pose_off_the_models_renders(pairs) -> None:
    """Pose read off the model's images agrees with the cameras: the heads turn as the cameras say."""
    _, cams, fake, _ = pairs
    pred = AttributePredictor.from_pretrained().predict(fake)
    yaw = torch.tensor([c.yaw for c in cams])
    assert (pred["yaw"] - yaw).abs().mean() < 5.0


@pytest.mark.xfail(strict=True, reason="known gap: the shipped model renders no glasses rims yet (64 px, two-stage "
                                       "CPU distillation); see MODEL_CARD.md 'What it is not'")
def test_predictor_sees_the_glasses_the_world_has(pairs) -> None:
    z, _, fake, _ = pairs
    pred = AttributePredictor.from_pretrained().predict(fake)
    assert ((pred["glasses"] > 0.5).float() == head_params_from_z(z).glasses).float().mean() >= 0.75


def test_render_without_network_uses_the_bundled_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render", "--seed", "0", "--yaw", "15", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    img = np.asarray(Image.open(tmp_path / "seed0000.png"))
    assert img.shape == (64, 64, 3) and img.std() > 10
