"""Pivotal tuning: a tuned copy that fits the photo better, changes only the chosen parts, and a delta file tied to
its base weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.generator.checkpoint import load_with_info
from stylenerf_edit.invert.lpips import LPIPS
from stylenerf_edit.invert.pti import (TuningConfig, TuningError, apply_tuning, load_tuning, principal_directions,
                                       save_tuning, tune, tuned_parameters)
from stylenerf_edit.metrics import psnr


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    G, info = load_with_info("bundled:heads")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        truth = G.mapping(G.sample_z(1, gen))[0]
        bg = G.sample_bg_code(1, gen)[0]
        camera = Camera(yaw=12.0, pitch=3.0)
        world, intr = stack_cameras([camera])
        target = G.synthesis(truth[None], world, intr, bg[None]).img[0]
    pivot = G.mapping.w_avg.expand(G.num_ws, -1).clone()    # a poor pivot: the tuning has much to fit
    return G, info, pivot, camera, bg, target, LPIPS("vgg")


def _input_psnr(G, pivot, camera, bg, target) -> float:
    world, intr = stack_cameras([camera])
    with torch.no_grad():
        return float(psnr(G.synthesis(pivot[None], world, intr, bg[None]).img, target[None]))


def test_tuning_fits_the_photo_and_changes_only_its_parts(setup, tmp_path):
    G, info, pivot, camera, bg, target, lpips = setup
    before = {k: v.clone() for k, v in G.state_dict().items()}
    tuning = tune(G, pivot, camera, bg, target, lpips, info.weights_sha256,
                  TuningConfig(steps=8, lr=1e-2, parts="upsampler", views=2))
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())      # G itself untouched
    assert set(tuning.deltas) == set(tuned_parameters(G, "upsampler"))
    assert all(name.startswith("synthesis.b") for name in tuning.deltas)
    tuned = apply_tuning(G, tuning, info.weights_sha256)
    gain = _input_psnr(tuned, pivot, camera, bg, target) - _input_psnr(G, pivot, camera, bg, target)
    assert gain > 0.5
    path = save_tuning(tuning, tmp_path / "tuning.safetensors")
    again = load_tuning(path)
    assert again.base_sha256 == info.weights_sha256 and again.config["parts"] == "upsampler"
    for name, delta in tuning.deltas.items():   # float16 on disk
        assert torch.allclose(again.deltas[name], delta, atol=1e-3 * float(delta.abs().max()) + 1e-6)
    assert _input_psnr(apply_tuning(G, again, info.weights_sha256), pivot, camera, bg, target) == \
        pytest.approx(_input_psnr(tuned, pivot, camera, bg, target), abs=0.05)


def test_tuning_the_nerf_renders_it_every_step(setup):
    """With the NeRF tuned its output cannot be rendered once: the tuning still fits, changing the NeRF only."""
    G, info, pivot, camera, bg, target, lpips = setup
    tuning = tune(G, pivot, camera, bg, target, lpips, info.weights_sha256,
                  TuningConfig(steps=6, lr=1e-3, parts="nerf", views=2, locality_latents=2))
    assert set(tuning.deltas) == set(tuned_parameters(G, "nerf"))
    assert all(name.startswith(("synthesis.fg_nerf.", "synthesis.bg_nerf.")) for name in tuning.deltas)
    tuned = apply_tuning(G, tuning, info.weights_sha256)
    assert _input_psnr(tuned, pivot, camera, bg, target) > _input_psnr(G, pivot, camera, bg, target) + 0.1


def test_principal_directions_are_the_mappings_leading_axes_at_one_standard_deviation(setup):
    G = setup[0]
    dirs = principal_directions(G, 4, torch.Generator().manual_seed(0), samples=2048)
    assert dirs.shape == (4, G.cfg.w_dim)
    norms = dirs.norm(dim=1)
    assert torch.all(norms[:-1] >= norms[1:])
    unit = dirs / norms[:, None]
    assert torch.allclose(unit @ unit.T, torch.eye(4), atol=1e-4)
    with torch.no_grad():    # fresh samples spread along each axis by about its length
        w = G.mapping(G.sample_z(2048, torch.Generator().manual_seed(1)))[:, 0]
    assert torch.allclose((w @ unit.T).std(0), norms, rtol=0.1)


def test_the_edit_regulariser_keeps_an_edits_change_through_the_tuning(setup):
    """Tuned hard around a poor pivot, the upsampler changes what an edit does; the edit term keeps the tuned change
    under a principal edit closer to the untuned one."""
    G, info, pivot, camera, bg, target, lpips = setup
    edit = 2.0 * principal_directions(G, 1, torch.Generator().manual_seed(0))[0]
    world, intr = stack_cameras([camera])

    def change(model) -> torch.Tensor:
        with torch.no_grad():
            ws = torch.stack([pivot, pivot + edit])
            img = model.synthesis(ws, world.expand(2, -1, -1), intr.expand(2, -1, -1), bg.expand(2, -1)).img
        return img[1] - img[0]

    base = change(G)
    errors, terms = {}, []
    for weight in (0.0, 50.0):
        config = TuningConfig(steps=12, lr=1e-2, views=2, locality_weight=0.0, multiview_weight=0.0,
                              edit_weight=weight, edit_directions=1)
        tuning = tune(G, pivot, camera, bg, target, lpips, info.weights_sha256, config,
                      callback=lambda step, t: terms.append(set(t)))
        errors[weight] = float((change(apply_tuning(G, tuning, info.weights_sha256)) - base).square().mean())
    assert all("edits" not in t for t in terms[:12]) and all("edits" in t for t in terms[12:])
    assert errors[50.0] < 0.5 * errors[0.0], errors


def test_tuning_files_are_checked(setup, tmp_path):
    G, info, *_ = setup
    with pytest.raises(TuningError, match="no such tuning file"):
        load_tuning(tmp_path / "none.safetensors")
    save_file({"synthesis.b64.torgb.bias": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(TuningError, match="not a stylenerf-edit tuning file"):
        load_tuning(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(TuningError, match="unreadable tuning file"):
        load_tuning(tmp_path / "junk.safetensors")
    from stylenerf_edit.invert.pti import Tuning
    tuning = Tuning({"synthesis.b64.torgb.bias": torch.full((3,), float("nan"))}, info.weights_sha256)
    with pytest.raises(TuningError, match="NaN"):
        load_tuning(save_tuning(tuning, tmp_path / "nan.safetensors"))
    with pytest.raises(TuningError, match="made for weights"):
        apply_tuning(G, Tuning({}, "0" * 64), info.weights_sha256)
    with pytest.raises(TuningError, match="does not have"):
        apply_tuning(G, Tuning({"synthesis.b64.torgb.bias": torch.zeros(5)}, info.weights_sha256), info.weights_sha256)
    for bad in ({"parts": "mapping"}, {"steps": 0}, {"lr": -1.0}, {"locality_latents": 0},
                {"regulariser_lpips_scale": 0.0}, {"regulariser_lpips_scale": 1.5}, {"edit_directions": 0},
                {"edit_weight": -1.0}):
        with pytest.raises(ValueError):
            TuningConfig(**bad)


def test_invert_with_pti_then_edit_uses_the_tuning(tmp_path):
    import json

    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from stylenerf_edit.cli import main
    from stylenerf_edit.synthetic.dataset import demo_photos

    photo = demo_photos()[1]
    result = CliRunner().invoke(main, ["invert", str(photo), "--aligned", "--steps", "20", "--pti", "--pti-steps", "8",
                                       "--pti-lr", "3e-3", "--out", str(tmp_path / "inv")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "inv" / photo.stem
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["pti_psnr"] > metrics["psnr"] and metrics["pti_config"]["steps"] == 8
    assert "tuned: PSNR" in result.output and (folder / "reconstruction_pti.png").is_file()
    edited = {}
    for name, keep in (("with", True), ("without", False)):
        if not keep:
            (folder / "tuning.safetensors").rename(tmp_path / "aside.safetensors")
        result = CliRunner().invoke(main, ["edit", str(folder / "latent.npz"), "--edit", "smile=0", "--views", "0",
                                           "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        edited[name] = np.asarray(Image.open(tmp_path / name / "edited.png"), dtype=np.float64)
        result = CliRunner().invoke(main, ["render", str(folder / "latent.npz"), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        edited[f"render {name}"] = np.asarray(Image.open(tmp_path / name / f"{photo.stem}.png"), dtype=np.float64)
    tuned_fit = np.asarray(Image.open(folder / "reconstruction_pti.png"), dtype=np.float64)
    assert np.abs(edited["with"] - tuned_fit).mean() < 0.5 < np.abs(edited["without"] - tuned_fit).mean()
    assert np.abs(edited["render with"] - tuned_fit).mean() < 0.5 < np.abs(edited["render without"] - tuned_fit).mean()
    # the edited latent carries its tuning: rendered later, on its own, it is drawn by the tuned generator
    assert (tmp_path / "with" / "tuning.safetensors").is_file() and not (tmp_path / "without" / "tuning.safetensors").exists()
    assert "tuning.safetensors" in json.loads((tmp_path / "with" / "edit.json").read_text())["files"]
    result = CliRunner().invoke(main, ["render", str(tmp_path / "with" / "latent.npz"), "--out", str(tmp_path / "re")])
    assert result.exit_code == 0, result.output
    assert np.abs(np.asarray(Image.open(tmp_path / "re" / "with.png"), dtype=np.float64) - edited["with"]).mean() < 0.5
    # an untuned edit into that folder removes the tuning it wrote there, which would draw the new latent wrongly
    result = CliRunner().invoke(main, ["edit", str(folder / "latent.npz"), "--edit", "smile=1", "--views", "0",
                                       "--out", str(tmp_path / "with")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "with" / "tuning.safetensors").exists()
    other = tmp_path / "other"      # a tuning beside another latent is refused
    other.mkdir()
    (tmp_path / "aside.safetensors").rename(other / "tuning.safetensors")
    from dataclasses import replace

    from stylenerf_edit.invert.latent import load_latent, save_latent
    latent = load_latent(folder / "latent.npz")
    save_latent(replace(latent, ws=latent.ws + 0.1), other / "latent.npz")
    result = CliRunner().invoke(main, ["edit", str(other / "latent.npz"), "--edit", "smile=1", "--out",
                                       str(tmp_path / "x")])
    assert result.exit_code == 1 and "tuned around another latent" in result.output


def test_batch_and_demo_tune_and_edit_with_the_tuned_generator(tmp_path):
    import json
    import shutil

    from stylenerf_edit.batch import BatchOptions, run_batch
    from stylenerf_edit.demo import run_demo
    from stylenerf_edit.invert.optimize import InversionConfig
    from stylenerf_edit.invert.pipeline import InvertOptions
    from stylenerf_edit.synthetic.dataset import demo_photos

    tuning = TuningConfig(steps=2, lr=1e-2)
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(demo_photos()[1], photos / "head.png")
    options = BatchOptions(invert=InvertOptions(config=InversionConfig(steps=2), aligned=True, pti=tuning),
                           edits=("smile=1",), views="0", progress=False)
    report = run_batch(photos, tmp_path / "out", options=options)
    assert len(report.done) == 1
    folder = tmp_path / "out" / "head"
    assert {"tuning.safetensors", "reconstruction_pti.png"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "metrics.json").read_text())["pti_config"]["steps"] == 2
    assert (folder / "edits" / "smile+1" / "edited.png").is_file()
    assert (folder / "edits" / "smile+1" / "tuning.safetensors").read_bytes() == (folder / "tuning.safetensors").read_bytes()

    result = run_demo(tmp_path / "demo", steps=2, pti=tuning, yaws=(0.0,), edits=("smile=1",), progress=False)
    assert result.metrics["pti_psnr"] > 0
    assert next((tmp_path / "demo" / "inversion").glob("*/tuning.safetensors")).is_file()
    assert (tmp_path / "demo" / "smile+1" / "tuning.safetensors").is_file()
