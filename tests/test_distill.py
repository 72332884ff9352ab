"""Distillation of the bundled model: exact resume, export/--init round trip, warm start, part-weighted loss."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from stylenerf_edit.generator import load_generator
from stylenerf_edit.generator.network import Generator, GeneratorConfig
from stylenerf_edit.generator.upsampler import upsample_image
from stylenerf_edit.synthetic import distill, predictor
from stylenerf_edit.synthetic.distill import DistillError, TrainConfig, export, losses, train, warm_start
from stylenerf_edit.synthetic.params import NUM_HEAD_PARAMS
from stylenerf_edit.synthetic.renderer import PARTS
from stylenerf_edit.synthetic.trainset import TrainingSetError


def tiny(resolution: int = 16) -> GeneratorConfig:
    """A generator small enough to train a few steps in well under a second."""
    blocks = [16] if resolution == 16 else [16, 8]
    return GeneratorConfig(img_resolution=resolution, mapping_layers=2, nerf_resolution=8, feature_dim=16,
                           fg_hidden=16, fg_layers=2, fg_freqs=4, bg_hidden=8, bg_layers=2, bg_freqs=2,
                           n_ray_samples=4, block_channels=blocks)


def tiny_tc(**changes) -> TrainConfig:
    base = TrainConfig(batch=2, steps=6, minutes=10, threads=1, resolution=16, world=2, log_every=1,
                       checkpoint_minutes=1e6, probe_weight=1.0, part_weights="eyes=4,mouth=3,glasses=4")
    return dataclasses.replace(base, **changes)


def log_rows(run: Path) -> list[list[str]]:
    with open(run / "log.csv") as f:
        return [row[:1] + row[3:] for row in csv.reader(f)]   # minutes vary from run to run


@pytest.mark.parametrize("trainset", [0, 8], ids=["rendered-per-step", "pre-rendered"])
def test_an_interrupted_run_resumes_exactly(tmp_path: Path, trainset: int):
    tc = tiny_tc(trainset=trainset, chunk=4)   # 6 steps x 2 samples: into the set's second, shuffled epoch
    whole = train(tmp_path / "whole", tc, config=tiny())
    train(tmp_path / "split", tc, config=tiny(), stop=lambda step: step == 3)
    assert load_run_state(tmp_path / "split")["step"] == 3
    resumed = train(tmp_path / "split", tc, config=tiny())
    assert len(log_rows(tmp_path / "whole")) == 7
    assert log_rows(tmp_path / "split") == log_rows(tmp_path / "whole")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def load_run_state(run: Path) -> dict:
    return distill.load_run_state(run / "checkpoint.pt")


def test_export_records_the_stage_and_init_reproduces_its_weights(tmp_path: Path):
    tc = tiny_tc(steps=2)
    train(tmp_path / "run", tc, command="python -m distill --first", config=tiny(), stop=lambda step: step == 1)
    train(tmp_path / "run", tc, command="python -m distill --again", config=tiny())
    exported = export(tmp_path / "run", tmp_path / "model")
    stages = json.loads((exported / "config.json").read_text())["source"]["stages"]
    assert len(stages) == 1 and stages[0]["steps"] == 2 and stages[0]["world"] == 2
    assert distill.model_world({"stages": stages}) == 2
    assert distill.model_world({}) == 1 and distill.model_world({"steps": 9000}) == 1   # first-generation exports
    assert stages[0]["command"] == "python -m distill --first"
    assert [s["at_step"] for s in stages[0]["sessions"]] == [0, 1]

    G = Generator(tiny())
    start = warm_start(G, torch.nn.Linear(G.cfg.w_dim, NUM_HEAD_PARAMS), exported)
    assert start.fresh == []
    reference = load_generator(exported).state_dict()
    for name, value in G.state_dict().items():
        assert torch.equal(value, reference[name]), name

    # A next stage from the export carries the first stage in its own history.
    train(tmp_path / "next", tiny_tc(steps=1, init=str(exported)), command="python -m distill --next", config=tiny())
    stages = json.loads((export(tmp_path / "next", tmp_path / "model2") / "config.json").read_text())["source"]["stages"]
    assert [s["command"] for s in stages] == ["python -m distill --first", "python -m distill --next"]


def test_warm_start_grows_a_block_that_starts_as_the_upsampled_smaller_model(tmp_path: Path):
    train(tmp_path / "run", tiny_tc(steps=1), config=tiny())
    small = Generator(tiny())
    small.load_state_dict(load_run_state(tmp_path / "run")["G"])
    big = Generator(tiny(32))
    start = warm_start(big, torch.nn.Linear(big.cfg.w_dim, NUM_HEAD_PARAMS), tmp_path / "run" / "checkpoint.pt")
    assert start.fresh and all(name.startswith("synthesis.b32.") for name in start.fresh)
    g = torch.Generator().manual_seed(0)
    z, code = torch.randn(2, 512, generator=g), torch.randn(2, 32, generator=g)
    cams = distill.stack_cameras(small.camera_prior.sample(2, g))
    with torch.no_grad():
        img16 = small(z, cams, code)
        img32 = big(z, cams, code)
    assert torch.allclose(img32, upsample_image(img16), atol=1e-5)


def test_part_weights_concentrate_the_image_loss_on_their_part():
    G = Generator(tiny())
    probe = torch.nn.Linear(G.cfg.w_dim, NUM_HEAD_PARAMS)
    g = torch.Generator().manual_seed(1)
    z, code, world, intr = distill.sample_inputs(G.cfg, 2, g)
    with torch.no_grad():
        img = G(z, (world, intr), code)
    eyes = torch.zeros(2, 1, 16, 16)
    eyes[:, :, 4:8, 4:12] = 1
    parts = torch.zeros(2, len(PARTS), 16, 16)
    parts[:, PARTS.index("eyes")] = eyes[:, 0]
    parts[:, PARTS.index("background")] = 1 - eyes[:, 0]
    batch = {"z": z, "code": code, "world": world, "intr": intr, "mask": eyes, "parts": parts}

    def image_loss(target: torch.Tensor, part_weights: str) -> float:
        with torch.no_grad():
            return float(losses(G, probe, {**batch, "img": target}, tiny_tc(part_weights=part_weights))["image"])

    wrong_eyes, wrong_background = img + 0.5 * eyes, img + 0.5 * (1 - eyes)
    mean_weight = 1 + 3 * float(eyes.mean())     # the weighted loss is normalised by the mean weight
    assert image_loss(wrong_eyes, "eyes=4") == pytest.approx(4 / mean_weight * image_loss(wrong_eyes, ""), rel=1e-4)
    assert image_loss(wrong_background, "eyes=4") == pytest.approx(image_loss(wrong_background, "") / mean_weight,
                                                                   rel=1e-4)
    weight = distill.pixel_weights(batch, tiny_tc(part_weights="eyes=4,background=0.5", face_weight=1))
    assert weight[0, 0, 5, 5] == pytest.approx(1 + 1 + 3) and weight[0, 0, 0, 0] == pytest.approx(0.5)


def test_a_1x1_model_warm_starts_a_3x3_one_exactly(tmp_path: Path):
    train(tmp_path / "run", tiny_tc(steps=1, resolution=32), config=tiny(32))
    small = Generator(tiny(32))
    small.load_state_dict(load_run_state(tmp_path / "run")["G"])
    wide = Generator(dataclasses.replace(tiny(32), kernel_size=3))
    start = warm_start(wide, torch.nn.Linear(wide.cfg.w_dim, NUM_HEAD_PARAMS), tmp_path / "run" / "checkpoint.pt")
    assert not start.fresh
    conv = wide.synthesis.b32.conv1.weight
    assert conv.shape[2:] == (3, 3) and conv[:, :, 1, 1].abs().sum() > 0
    off_centre = conv.detach().clone()
    off_centre[:, :, 1, 1] = 0
    assert not off_centre.any()
    g = torch.Generator().manual_seed(0)
    z, code = torch.randn(2, 512, generator=g), torch.randn(2, 32, generator=g)
    cams = distill.stack_cameras(small.camera_prior.sample(2, g))
    with torch.no_grad():
        assert torch.allclose(wide(z, cams, code), small(z, cams, code), atol=1e-5)
    with pytest.raises(DistillError, match="1x1 or 3x3"):
        distill.bundled_config(128, kernel_size=5)
    fine = distill.bundled_config(128, kernel_size=3, nerf_resolution=64)
    assert fine.block_resolutions == [128] and fine.block_channels == [48]
    with pytest.raises(DistillError, match="below the 64-px output"):
        distill.bundled_config(64, nerf_resolution=64)


def test_a_new_stage_keeps_the_init_models_architecture(tmp_path: Path):
    train(tmp_path / "run", tiny_tc(steps=1, resolution=32), config=dataclasses.replace(tiny(32), kernel_size=3))
    export(tmp_path / "run", tmp_path / "exported")
    assert distill._architecture(tiny_tc(init=str(tmp_path / "exported"))) == (3, 8)
    assert distill._architecture(tiny_tc(init=str(tmp_path / "run" / "checkpoint.pt"))) == (3, 8)
    assert distill._architecture(tiny_tc(init=str(tmp_path / "exported"), kernel_size=1)) == (1, 8)
    assert distill._architecture(tiny_tc()) == (1, 32)


def test_the_feature_term_adds_a_world_predictors_perceptual_distance(tmp_path: Path):
    predictor.train(tmp_path / "net", n_train=32, n_val=4, epochs=1, threads=1, world=2, resolution=64,
                    train_supersample=1)
    tc = tiny_tc(steps=2, feature_weight=0.5, feature_net=str(tmp_path / "net"))
    train(tmp_path / "run", tc, config=tiny())
    header, *rows = log_rows(tmp_path / "run")
    assert "features" in header and all(float(row[header.index("features")]) > 0 for row in rows)
    G, probe = Generator(tiny()), torch.nn.Linear(tiny().w_dim, NUM_HEAD_PARAMS)
    batch = distill.sample_batch(G, 2, torch.Generator().manual_seed(0), 2)
    net = predictor.AttributePredictor.from_pretrained(tmp_path / "net")
    plain, perceptual = losses(G, probe, batch, tc), losses(G, probe, batch, tc, net)
    assert torch.allclose(perceptual["total"], plain["total"] + 0.5 * perceptual["features"])


def test_bad_options_are_refused_in_one_line(tmp_path: Path):
    with pytest.raises(DistillError, match="needs --feature-net"):
        train(tmp_path / "run", tiny_tc(feature_weight=1.0), config=tiny())
    with pytest.raises(DistillError, match="one of background"):
        distill.parse_part_weights("eyes=4,nose=2")
    with pytest.raises(DistillError, match="does not render"):
        distill.pixel_weights({"mask": torch.zeros(1, 1, 4, 4)}, tiny_tc(world=1))
    train(tmp_path / "run", tiny_tc(steps=1, trainset=4, chunk=4), config=tiny())
    with pytest.raises(TrainingSetError, match="rendered with"):
        train(tmp_path / "run", tiny_tc(steps=2, trainset=8, chunk=4), config=tiny())
