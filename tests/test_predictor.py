"""The bundled attribute predictor reads attributes and pose off procedural renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stylenerf_edit.errors import CheckpointError
from stylenerf_edit.synthetic.predictor import (CONFIG_NAME, AttributePredictor, bundled_dir, evaluate,
                                               feature_distance, make_set)


@pytest.fixture(scope="module")
def predictor() -> AttributePredictor:
    return AttributePredictor.from_pretrained()


def test_accuracy_floor_on_fresh_renders(predictor: AttributePredictor) -> None:
    config = json.loads((bundled_dir() / CONFIG_NAME).read_text())     # the world and size it reads
    images, targets = make_set(96, seed=424242, resolution=predictor.input_resolution, world=config.get("world", 1))
    ev = evaluate(predictor, images, targets)
    assert ev.glasses_accuracy >= 0.95
    assert ev.smile_mae <= 0.15 and ev.age_mae <= 0.08 and ev.hair_color_mae <= 0.12
    assert ev.yaw_mae_deg <= 2.5 and ev.pitch_mae_deg <= 2.5


def test_any_resolution_is_accepted(predictor: AttributePredictor) -> None:
    images, _ = make_set(4, seed=7)
    big = torch.nn.functional.interpolate(images, size=(128, 128), mode="nearest")  # area-pooled back exactly
    a, b = predictor.predict(images), predictor.predict(big)
    assert (a["yaw"] - b["yaw"]).abs().max() < 1e-3 and set(a) == {"smile", "age", "glasses", "hair_color", "yaw", "pitch"}


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as e:
        AttributePredictor.from_pretrained(tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_feature_distance_is_a_perceptual_distance(predictor: AttributePredictor) -> None:
    images, _ = make_set(4, seed=11, resolution=predictor.input_resolution, world=2)
    maps = predictor.feature_maps(images)
    assert [m.shape[-1] for m in maps] == sorted((m.shape[-1] for m in maps), reverse=True)
    assert maps[-1].shape[-1] == 4                       # the body ends at 4 x 4, its last map is the head's input
    assert torch.equal(feature_distance(predictor, images, images), torch.zeros(4))
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    near, far = feature_distance(predictor, blurred, images), feature_distance(predictor, images.roll(1, 0), images)
    assert (near > 0).all() and (near < far).all()       # the same head blurred is nearer than another head
    x = blurred.clone().requires_grad_(True)
    feature_distance(predictor, x, images).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
