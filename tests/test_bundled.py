"""The shipped model: loads by name, reproduces its procedural world, renders from the CLI by default."""

from __future__ import annotations

from dataclasses import dataclass
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
from stylenerf_edit.synthetic.distill import model_world
from stylenerf_edit.synthetic.params import background_from_code, head_params_from_z
from stylenerf_edit.synthetic.predictor import AttributePredictor
from stylenerf_edit.synthetic.renderer import render_heads

# A model that ignores z renders every head as the average one, which already scores ~20.4 dB against the
# world on these pairs (the background and pose are right); the shipped models have scored 27 dB and more, several
# dB better on every pair. bench/bundled.py measures the mean on 256 pairs.
MEAN_GAIN_DB = 4.0   # mean PSNR over the average-latent render's, on the same pairs
PAIR_GAIN_DB = 1.0   # and on every pair


@pytest.fixture(scope="module")
def G():
    return load_generator()


@dataclass
class Pairs:
    """Eight held-out latents with cameras within +-30 degrees, background codes and ground-truth renders."""

    z: torch.Tensor
    code: torch.Tensor
    cams: list[Camera]
    real: torch.Tensor

    def render(self, G, ws: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return G.synthesize(ws, self.cams, self.code).img

    def gains_over_average(self, G) -> torch.Tensor:
        """Per pair: PSNR of ``G(z)`` minus PSNR of the average latent's render, both against the world."""
        ws_avg = G.mapping.w_avg.expand(len(self.z), G.num_ws, -1)
        return psnr(self.render(G, G.mapping(self.z)), self.real) - psnr(self.render(G, ws_avg), self.real)


@pytest.fixture(scope="module")
def pairs(G) -> Pairs:
    g = torch.Generator().manual_seed(31337)
    z, code = torch.randn(8, 512, generator=g), G.sample_bg_code(8, g)
    cams = [Camera(yaw=float(y), pitch=float(p)) for y, p in zip(torch.linspace(-30, 30, 8), torch.linspace(8, -8, 8))]
    world, intr = stack_cameras(cams)
    version = model_world(describe().extra.get("source", {}))      # the world the model was distilled from
    real = render_heads(head_params_from_z(z), world, intr, G.img_resolution, background_from_code(code),
                        world=version).image
    return Pairs(z, code, cams, real)


@pytest.fixture(scope="module")
def fake(G, pairs) -> torch.Tensor:
    return pairs.render(G, G.mapping(pairs.z))


def _reproduces(gains: torch.Tensor) -> bool:
    return bool(gains.mean() >= MEAN_GAIN_DB and gains.min() >= PAIR_GAIN_DB)


def test_loads_by_name_as_the_default(G) -> None:
    info = describe()
    assert info.name == "bundled:heads" and info.format == "safetensors"
    assert G.img_resolution == 128 and G.num_ws == 11 and G.cfg.z_dim == G.cfg.w_dim == 512
    size = sum(f.stat().st_size for f in Path(info.path).iterdir())
    assert size < 20 * 2 ** 20


def test_reproduces_each_head_of_its_world_not_just_the_average_one(G, pairs) -> None:
    gains = pairs.gains_over_average(G)
    assert _reproduces(gains), gains


def test_a_model_that_ignores_z_fails_that_check(G, pairs, monkeypatch) -> None:
    monkeypatch.setattr(G.mapping, "forward", lambda z, **_: G.mapping.w_avg.expand(len(z), G.num_ws, -1))
    assert not _reproduces(pairs.gains_over_average(G))


def test_predictor_reads_the_pose_off_the_models_renders(pairs, fake) -> None:
    """Pose read off the model's images agrees with the cameras: the heads turn as the cameras say."""
    pred = AttributePredictor.from_pretrained().predict(fake)
    yaw = torch.tensor([c.yaw for c in pairs.cams])
    assert (pred["yaw"] - yaw).abs().mean() < 5.0


def test_predictor_sees_the_glasses_the_world_has(pairs, fake) -> None:
    """The first bundled model drew no glasses rims (this was a strict xfail); bench/bundled.py measures the
    predictor's glasses accuracy on 256 of the second one's renders."""
    pred = AttributePredictor.from_pretrained().predict(fake)
    assert ((pred["glasses"] > 0.5).float() == head_params_from_z(pairs.z).glasses).float().mean() >= 0.75


def test_predictor_reads_smiles_and_frowns_off_the_models_renders(pairs, fake) -> None:
    """Stage 5 drew frowns nearly neutral (the two frowns here, -0.58 and -0.81, read -0.16 and -0.24; MAE 0.23);
    the perceptual term of stage 8 brought them back (-0.62, -0.81; MAE 0.13). bench/bundled.py measures 256."""
    smile = AttributePredictor.from_pretrained().predict(fake)["smile"]
    true = head_params_from_z(pairs.z).smile
    assert (smile - true).abs().mean() <= 0.18
    assert smile[true < -0.5].mean() <= -0.4


def test_render_without_network_uses_the_bundled_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render", "--seed", "0", "--yaw", "15", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    img = np.asarray(Image.open(tmp_path / "seed0000.png"))
    R = describe().config.img_resolution
    assert img.shape == (R, R, 3) and img.std() > 10
