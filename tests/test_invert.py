"""Inversion: latent files, pose estimation, W+ optimisation and the photo pipeline on the bundled model."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import load_with_info
from stylenerf_edit.invert.align import align_photo
from stylenerf_edit.invert.latent import GeneratorRef, Latent, LatentError, load_latent, save_latent
from stylenerf_edit.invert.lpips import LPIPS
from stylenerf_edit.invert.optimize import InversionConfig, coarse_phase, invert, learning_rate_factor
from stylenerf_edit.invert.pose import (PoseCalibration, calibrate_pose, fit_calibration, pose_grid,
                                        pose_from_landmarks, project_mean_face, raw_pose_from_landmarks,
                                        search_pose)
from stylenerf_edit.metrics import psnr


@pytest.fixture(scope="module")
def bundled():
    return load_with_info("bundled:heads")


@pytest.fixture(scope="module")
def astronaut_path(tmp_path_factory):
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="module")
def lpips():
    return LPIPS("vgg")


def _sample(G, n: int, seed: int, cameras: list[Camera]):
    """Generator renders with their true ws, background codes and cameras."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(G.sample_z(n, gen), truncation_psi=0.7)
        bg = G.sample_bg_code(n, gen)
        img = G.synthesize(ws, cameras, bg).img
    return ws, bg, img


# --- latent files ---------------------------------------------------------------------------------------

def _latent(info) -> Latent:
    rng = np.random.default_rng(0)
    return Latent(ws=rng.standard_normal((info.config.num_ws, 512)), camera=Camera(yaw=12.5, pitch=-3.0),
                  bg_code=rng.standard_normal(info.config.bg_code_dim), generator=GeneratorRef.from_info(info),
                  alignment={"quad": [[0, 0], [0, 9], [9, 9], [9, 0]], "source_size": [10, 10], "output_size": 64},
                  metrics={"psnr": 25.5, "lpips": 0.12}, loss_history={"total": np.linspace(1, 0, 5)},
                  source="photo.jpg", extra={"pose_method": "predictor"})


def test_latent_round_trip(tmp_path, bundled):
    _, info = bundled
    latent = _latent(info)
    path = save_latent(latent, tmp_path / "a" / "latent.npz")
    back = load_latent(path, generator=info)
    np.testing.assert_array_equal(back.ws, latent.ws.astype(np.float32))
    np.testing.assert_array_equal(back.bg_code, latent.bg_code.astype(np.float32))
    assert back.camera == latent.camera and back.generator == latent.generator
    assert back.alignment == latent.alignment and back.metrics == latent.metrics and back.extra == latent.extra
    np.testing.assert_allclose(back.loss_history["total"], np.linspace(1, 0, 5), rtol=1e-6)
    assert back.source == "photo.jpg" and back.tool_version
    assert not list(tmp_path.glob("a/.*partial"))   # the atomic write leaves nothing behind


def test_latent_validation(tmp_path, bundled):
    _, info = bundled
    with pytest.raises(LatentError, match="no such latent file"):
        load_latent(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(LatentError, match="not a readable .npz"):
        load_latent(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(LatentError, match="no 'meta' entry"):
        load_latent(tmp_path / "other.npz")

    good = save_latent(_latent(info), tmp_path / "good.npz")
    data = dict(np.load(good))
    bad = dict(data, ws=np.full_like(data["ws"], np.nan))
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(LatentError, match="NaN"):
        load_latent(tmp_path / "nan.npz")
    np.savez(tmp_path / "shape.npz", **dict(data, ws=data["ws"][:3]))
    with pytest.raises(LatentError, match="shape"):
        load_latent(tmp_path / "shape.npz")
    meta = json.loads(str(data["meta"]))
    meta["format_version"] = 99
    np.savez(tmp_path / "future.npz", **dict(data, meta=np.array(json.dumps(meta))))
    with pytest.raises(LatentError, match="upgrade"):
        load_latent(tmp_path / "future.npz")

    other = replace(info, weights_sha256="0" * 64, name="ffhq_256")
    with pytest.raises(LatentError, match="not for 'ffhq_256'"):
        load_latent(good, generator=other)
    for path in tmp_path.glob("*.npz"):   # every message is one line
        try:
            load_latent(path, generator=other)
        except LatentError as e:
            assert "\n" not in str(e) and str(path) in str(e)


# --- pose -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (25.0, 8.0), (-35.0, -12.0), (10.0, 15.0)])
def test_pnp_recovers_the_generator_camera_of_a_perfect_mean_face(yaw, pitch):
    landmarks = np.nan_to_num(project_mean_face(Camera(yaw=yaw, pitch=pitch), 256))
    est = raw_pose_from_landmarks(landmarks, 256, 12.0)
    assert est == pytest.approx((yaw, pitch), abs=1e-3)


def test_calibration_fit_and_file(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.uniform(-30, 30, size=(50, 2))
    true = np.stack([0.8 * raw[:, 0] + 2.0, 1.3 * raw[:, 1] - 4.0], 1) + rng.normal(0, 0.5, (50, 2))
    cal = fit_calibration(raw, true, "test")
    assert cal.yaw_scale == pytest.approx(0.8, abs=0.03) and cal.yaw_offset == pytest.approx(2.0, abs=0.3)
    assert cal.pitch_scale == pytest.approx(1.3, abs=0.03) and cal.pitch_offset == pytest.approx(-4.0, abs=0.3)
    assert 0.3 < cal.residual_yaw < 0.7 and cal.samples == 50
    assert PoseCalibration.load(cal.save(tmp_path / "cal.json")) == cal
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(Exception, match="calibrate-pose"):
        PoseCalibration.load(tmp_path / "bad.json")


def test_calibrate_pose_on_generator_samples(bundled):
    """A detector that sees the yaw 20 % too small and the pitch 3 degrees too high is calibrated away."""
    G, _ = bundled
    cameras = G.camera_prior.sample(12, torch.Generator().manual_seed(3))
    pending, seen = list(cameras), []

    def biased_detector(image: np.ndarray):
        cam = pending.pop(0)
        seen.append(image.shape)
        if len(pending) == 5:
            return None   # a sample without a face is skipped
        return np.nan_to_num(project_mean_face(cam.with_(yaw=0.8 * cam.yaw, pitch=cam.pitch + 3.0), R))

    R = G.img_resolution
    cal = calibrate_pose(G, biased_detector, cameras=cameras, batch=4)
    assert seen == [(R, R, 3)] * 12 and cal.samples == 11
    assert cal.yaw_scale == pytest.approx(1.25, abs=1e-3) and cal.yaw_offset == pytest.approx(0, abs=1e-2)
    assert cal.pitch_scale == pytest.approx(1.0, abs=1e-3) and cal.pitch_offset == pytest.approx(-3.0, abs=1e-2)
    assert cal.residual_yaw < 1e-2


def test_pose_from_the_astronaut_landmarks_is_plausible(astronaut_path):
    face = align_photo(astronaut_path, 256)
    cam = pose_from_landmarks(face.landmarks, 256, 12.0)
    # She faces the camera nearly frontally, with her head level (the uncalibrated mean face gives -2.1, -0.4).
    assert abs(cam.yaw) < 8 and abs(cam.pitch) < 6


def test_search_pose_finds_the_rendered_grid_camera(bundled, lpips):
    G, _ = bundled
    grid = pose_grid(G, yaw_step=10, pitch_step=10)
    truth = [grid[3], grid[-2]]
    ws = G.mapping.w_avg.expand(2, G.num_ws, -1)
    bg = torch.zeros(2, G.cfg.bg_code_dim)
    with torch.no_grad():
        target = G.synthesize(ws, truth, bg).img
    found = search_pose(G, target, ws, bg, lambda a, b: (a - b).square().mean(dim=(1, 2, 3)), grid)
    assert found == truth


# --- optimisation ----------------------------------------------------------------------------------------

def _differences(a, b) -> list[str]:
    """What differs, bit for bit, between two inversion results."""
    diffs = [f"{name}: max |diff| {(x - y).abs().max():.3g}" for name, x, y in
             [("ws", a.ws, b.ws), ("bg_code", a.bg_code, b.bg_code), ("image", a.image, b.image)]
             if not torch.equal(x, y)]
    diffs += [f"camera {a.camera} != {b.camera}"] * (a.camera != b.camera)
    diffs += [f"metrics {a.metrics} != {b.metrics}"] * (a.metrics != b.metrics)
    return diffs + [f"history[{k}]" for k in a.history | b.history
                    if not np.array_equal(a.history.get(k), b.history.get(k))]


def test_a_photos_result_is_the_same_alone_and_with_any_batch_mates(bundled, lpips):
    """Bit for bit: the same photo inverted alone, first of two and last of three, and again alone."""
    G, _ = bundled
    cams = [Camera(yaw=15.0, pitch=4.0), Camera(yaw=-10.0, pitch=-2.0), Camera(yaw=25.0, pitch=-6.0)]
    _, _, target = _sample(G, 3, seed=12, cameras=cams)
    config = InversionConfig(steps=3, warmup=0.0, rampdown=0.0)
    alone = invert(G, target[2:], cams[2:], lpips, config)[0]
    assert alone.history["total"][-1] < alone.history["total"][0]   # it moved: the comparison is not vacuous
    last_of_three = invert(G, target, cams, lpips, config)[2]
    first_of_two = invert(G, target.flip(0)[:2], cams[::-1][:2], lpips, config)[0]
    again = invert(G, target[2:], cams[2:], lpips, config)[0]
    assert _differences(alone, last_of_three) == []
    assert _differences(alone, first_of_two) == []
    assert _differences(alone, again) == []


def test_photos_per_pass_batches_the_generator_and_changes_results_by_rounding_only(bundled, lpips):
    G, _ = bundled
    cams = [Camera(yaw=15.0, pitch=4.0), Camera(yaw=-10.0, pitch=-2.0), Camera(yaw=25.0, pitch=-6.0)]
    _, _, target = _sample(G, 3, seed=12, cameras=cams)
    calls = []
    hook = G.synthesis.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        together = invert(G, target, cams, lpips, InversionConfig(steps=3, warmup=0.0, rampdown=0.0,
                                                                  photos_per_pass=2))
    finally:
        hook.remove()
    assert calls == [2, 1] * 3 + [2, 1]   # three steps and the final render, passes of two then one
    alone = invert(G, target, cams, lpips, InversionConfig(steps=3, warmup=0.0, rampdown=0.0))
    for a, b in zip(together, alone):
        # Adam's first steps are sign-like: a coordinate whose gradient is near zero moves by +-lr on rounding
        # noise alone, so single coordinates of w may differ by 2 lr; the trajectory's losses may not
        np.testing.assert_allclose(a.history["total"], b.history["total"], rtol=1e-3)
        assert (a.ws - b.ws).abs().mean() < 0.005 and abs(a.camera.yaw - b.camera.yaw) < 1e-2
        assert a.metrics["psnr"] == pytest.approx(b.metrics["psnr"], abs=0.01)


def test_learning_rate_schedule():
    f = [learning_rate_factor(s, 100, 0.1, 0.3) for s in range(100)]
    assert f[0] == 0 and f[5] == pytest.approx(0.5) and f[10] == pytest.approx(1) and f[69] == pytest.approx(1)
    assert all(a >= b for a, b in zip(f[70:], f[71:])) and f[-1] < 0.01


def test_inversion_reaches_a_psnr_floor(bundled, lpips):
    G, _ = bundled
    cams = [Camera(yaw=15.0, pitch=4.0), Camera(yaw=-10.0, pitch=-2.0)]
    _, _, target = _sample(G, 2, seed=11, cameras=cams)
    config = InversionConfig(steps=30)
    start = psnr(G.synthesize(G.mapping.w_avg.expand(2, G.num_ws, -1), cams,
                              torch.zeros(2, G.cfg.bg_code_dim)).img.detach(), target)
    first = invert(G, target, cams, lpips, config)
    assert all(r.metrics["psnr"] > 24 and r.metrics["lpips"] < 0.05 for r in first), [r.metrics for r in first]
    assert all(r.metrics["psnr"] > s + 5 for r, s in zip(first, start))
    assert set(first[0].history) >= {"total", "lpips", "mse", "pose_prior"}
    assert first[0].history["total"].shape == (30,)
    assert first[0].history["total"][-1] < first[0].history["total"][0]
    assert all(not p.requires_grad for p in G.parameters())   # the generator is left as it was


def test_coarse_steps_fit_the_upsamplers_preview_to_the_downsampled_photo(bundled, lpips):
    """The first ``coarse_fraction`` of the steps compare the upsampler's 64-px image with the photo area-downsampled
    to 64 px; the rest, and the callback's images, are at full size."""
    import torch.nn.functional as F

    G, _ = bundled
    cams = [Camera(yaw=15.0, pitch=4.0)]
    _, _, target = _sample(G, 1, seed=11, cameras=cams)
    seen = []
    config = InversionConfig(steps=4, coarse_fraction=0.5, coarse_resolution=64)
    result = invert(G, target, cams, lpips, config, callback=lambda step, terms, img: seen.append(img.shape[-1]))[0]
    ws0, bg0 = G.mapping.w_avg.expand(1, G.num_ws, -1), torch.zeros(1, G.cfg.bg_code_dim)
    with torch.no_grad():
        preview = G.synthesize(ws0, cams, bg0, max_resolution=64).img
        full = G.synthesize(ws0, cams, bg0).img
    assert preview.shape[-1] == 64 < G.img_resolution
    coarse_mse = float((preview - F.interpolate(target, size=(64, 64), mode="area")).square().mean())
    assert result.history["mse"][0] == pytest.approx(coarse_mse, rel=1e-4)
    assert result.history["mse"][0] != pytest.approx(float((full - target).square().mean()), rel=1e-2)
    assert seen == [G.img_resolution] * 4 and result.image.shape[-1] == G.img_resolution
    # a generator no larger than the coarse size runs every step at full size
    blocks = G.cfg.block_resolutions
    assert coarse_phase(replace(config, coarse_resolution=G.img_resolution), blocks)[0] == 0
    assert coarse_phase(replace(config, coarse_resolution=G.img_resolution - 1), blocks)[0] == 0   # that block is the last
    assert coarse_phase(config, blocks) == (2, 64)
    assert coarse_phase(InversionConfig(steps=4, coarse_fraction=0.9), blocks)[0] == 3
    for bad in ({"coarse_fraction": 1.0}, {"coarse_fraction": -0.1}, {"coarse_resolution": 16}):
        with pytest.raises(ValueError, match="coarse"):
            InversionConfig(**bad)


def test_frozen_nerf_keeps_camera_nerf_rows_and_background(bundled, lpips):
    G, _ = bundled
    cams = [Camera(yaw=20.0)]
    _, _, target = _sample(G, 1, seed=5, cameras=cams)
    result = invert(G, target, [Camera()], lpips, InversionConfig.frozen_nerf(steps=5))[0]
    fg = G.cfg.fg_num_ws
    assert result.camera == Camera()
    assert torch.equal(result.bg_code, torch.zeros(G.cfg.bg_code_dim))
    assert torch.equal(result.ws[:fg], G.mapping.w_avg.expand(fg, -1))
    assert not torch.equal(result.ws[fg:], G.mapping.w_avg.expand(G.num_ws - fg, -1))


def test_camera_refinement_moves_towards_the_true_view(bundled, lpips):
    """Start 10 degrees off on a render of the average face: the refined camera ends closer to the truth."""
    G, _ = bundled
    truth = Camera(yaw=18.0, pitch=5.0)
    ws = G.mapping.w_avg.expand(1, G.num_ws, -1)
    with torch.no_grad():
        target = G.synthesize(ws, [truth], torch.zeros(1, G.cfg.bg_code_dim)).img
    start = truth.with_(yaw=8.0)
    result = invert(G, target, [start], lpips, InversionConfig(steps=30, w_lr=0.0, bg_lr=0.0, camera_lr=0.5))[0]
    assert abs(result.camera.yaw - truth.yaw) < 0.5 * abs(start.yaw - truth.yaw), result.camera


def test_bad_targets_are_refused(bundled, lpips):
    G, _ = bundled
    target = torch.full((1, 3, G.img_resolution, G.img_resolution), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        invert(G, target, [Camera()], lpips, InversionConfig(steps=1))
    with pytest.raises(ValueError, match="steps"):
        InversionConfig(steps=0)
    with pytest.raises(ValueError, match="w_lr"):
        InversionConfig(w_lr=math.nan)


# --- the photo pipeline and its CLI ----------------------------------------------------------------------

def _run(*args: str):
    from click.testing import CliRunner

    from stylenerf_edit.cli import main

    return CliRunner().invoke(main, list(args))


def test_cli_invert_aligned_photos_keeps_going_past_bad_ones(tmp_path, bundled):
    from PIL import Image

    from stylenerf_edit.synthetic.dataset import demo_photos

    _, info = bundled
    photos = demo_photos()[:2]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    (tmp_path / "album").mkdir()
    result = _run("invert", str(photos[0]), str(tmp_path / "missing.jpg"), str(tmp_path / "broken.png"),
                  str(tmp_path / "album"), str(photos[1]), "--aligned", "--steps", "3", "--out", str(out),
                  "--save-video", "--paste-back")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "missing.jpg" in errors[0] and "broken.png" in errors[1]
    assert f"stylenerf-edit batch {tmp_path / 'album'} --out" in errors[2]      # a folder: batch is the tool
    assert "3 of 5 photos failed" in result.output and "Traceback" not in result.output
    # Off a terminal: no carriage returns; unreadable photos reported before any optimisation, then a line per
    # photo as it finishes.
    lines = result.output.splitlines()
    done = [i for i, line in enumerate(lines) if " -> " in line and "PSNR" in line]
    assert "\r" not in result.output and len(done) == 2 and lines.index(errors[-1]) < done[0]
    for photo in photos:
        d = out / photo.stem
        assert {f.name for f in d.iterdir()} == {"aligned.png", "reconstruction.png", "latent.npz", "metrics.json",
                                                 "optimisation.mp4", "pasted.png"}
        assert Image.open(d / "aligned.png").size == (info.config.img_resolution,) * 2
        assert Image.open(d / "pasted.png").size == Image.open(photo).size
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["pose_method"] == "predictor" and metrics["steps"] == 3 and metrics["psnr"] > 10
        latent = load_latent(d / "latent.npz", generator=info)
        assert latent.loss_history["total"].shape == (3,) and latent.extra["pose_method"] == "predictor"
        assert latent.camera.yaw == pytest.approx(metrics["camera"]["yaw"])
        truth = json.loads(photo.with_suffix(".json").read_text())["camera"]
        assert abs(metrics["initial_camera"]["yaw"] - truth["yaw"]) < 5   # the bundled pose predictor


def test_invert_photos_reports_every_step_and_stops_when_its_monitor_raises(tmp_path, bundled):
    from stylenerf_edit.invert.pipeline import InvertOptions, invert_photos
    from stylenerf_edit.invert.settings import InversionConfig, TuningConfig
    from stylenerf_edit.synthetic.dataset import demo_photos

    photo = demo_photos()[0]
    reports = []
    options = InvertOptions(config=InversionConfig(steps=3), aligned=True, pti=TuningConfig(steps=2))
    (outcome,) = invert_photos([photo], tmp_path / "a", options=options, progress=False, monitor=reports.append)
    assert [(r.stage, r.step, r.steps) for r in reports] == [("invert", 1, 3), ("invert", 2, 3), ("invert", 3, 3),
                                                              ("tune", 1, 2), ("tune", 2, 2)]
    assert all(r.photo == photo for r in reports) and reports[2].image.shape == (3, 128, 128)
    assert reports[2].lpips == pytest.approx(load_latent(outcome.out_dir / "latent.npz").loss_history["lpips"][-1])

    class Stop(Exception):
        pass

    def stop_at_two(report):
        if report.step == 2:
            raise Stop()

    with pytest.raises(Stop):
        invert_photos([photo], tmp_path / "b", options=InvertOptions(config=InversionConfig(steps=50), aligned=True),
                      progress=False, monitor=stop_at_two)
    assert not any((tmp_path / "b").rglob("latent.npz"))


def test_cli_invert_names_every_folder_safely_inside_out_and_records_its_photo(tmp_path):
    import os
    import shutil

    from stylenerf_edit.names import is_safe_name
    from stylenerf_edit.synthetic.dataset import demo_photos

    photos = []
    for name in ["...jpg", "..jpg", ".hidden.png", "a_2.png", "a.png", "b/a.png"]:
        photos.append(tmp_path / "in" / name)
        photos[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo_photos()[0], photos[-1])
    out = tmp_path / "work" / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "notes.txt").write_text("mine\n")      # a user's folder where a.png's would go

    def run(order: list) -> dict[str, str]:
        result = _run("invert", *map(str, order), "--aligned", "--steps", "1", "--out", str(out))
        assert result.exit_code == 0, result.output
        assert [p.name for p in (tmp_path / "work").iterdir()] == ["out"]     # nothing beside --out
        mapping = {json.loads(m.read_text())["photo"]: m.parent.name for m in out.glob("*/metrics.json")}
        for photo in order:
            assert f"{photo} -> {out / mapping[os.path.abspath(photo)]}  " in result.output
        return mapping

    mapping = run(photos)
    assert set(mapping) == {os.path.abspath(p) for p in photos}
    assert all(is_safe_name(n) for n in mapping.values()) and len(set(mapping.values())) == len(photos)
    assert mapping[os.path.abspath(photos[3])] == "a_2"
    assert {p.name for p in (out / "a").iterdir()} == {"notes.txt"}
    assert run(photos[::-1]) == mapping                                      # a rerun, in another order
    assert len(list(out.iterdir())) == len(photos) + 1


def test_cli_invert_a_real_photo_uses_landmarks(tmp_path, astronaut_path):
    out = tmp_path / "out"
    result = _run("invert", str(astronaut_path), "--steps", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "astronaut" / "metrics.json").read_text())
    assert metrics["pose_method"] == "landmarks"
    latent = load_latent(out / "astronaut" / "latent.npz")
    assert latent.alignment["source_size"] == [512, 512]
    # Two steps fit nothing: the line says so, and what to do.
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert any("poor fit (LPIPS" in w and "more --steps (now 2) or --pti" in w for w in warnings), result.output


def test_a_real_face_given_to_a_model_of_procedural_heads_is_warned_about(tmp_path, astronaut_path, bundled):
    import shutil
    from pathlib import Path

    from stylenerf_edit.invert.pipeline import InvertOptions, fit_warnings, prepare_photo
    from stylenerf_edit.synthetic.dataset import demo_photos
    from stylenerf_edit.synthetic.distill import DOMAIN

    G, info = bundled
    marked = {}
    for name, domain in (("procedural", DOMAIN), ("unmarked", None)):
        model = tmp_path / name
        shutil.copytree(Path(info.path) if Path(info.path).is_dir() else Path(info.path).parent, model)
        config = json.loads((model / "config.json").read_text())
        config["source"].pop("domain", None)
        if domain:
            config["source"]["domain"] = domain       # what `distill --export` writes
        (model / "config.json").write_text(json.dumps(config))
        marked[name] = load_with_info(model)[1]
    procedural = marked["procedural"]
    photo = prepare_photo(astronaut_path, G.img_resolution)
    good = {"psnr": 30.0, "lpips": 0.05}
    (warning,) = fit_warnings(good, procedural, photo, InvertOptions())
    assert "draws procedural heads, not real faces" in warning and "--network ffhq_256" in warning
    assert fit_warnings(good, marked["unmarked"], photo, InvertOptions()) == []      # a model without the mark
    shipped = prepare_photo(demo_photos()[1], G.img_resolution, aligned=True)
    assert fit_warnings(good, procedural, shipped, InvertOptions()) == []   # its own kind of photo


def test_cli_invert_bad_requests(tmp_path):
    from PIL import Image

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8), (200, 150, 120)).save(tiny)
    result = _run("invert", str(tiny), "--steps", "1", "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "tiny.png: no face found" in result.output
    result = _run("invert", str(tiny), "--aligned", "--pose", "landmarks", "--steps", "1", "--out", str(tmp_path))
    assert result.exit_code == 1 and "--pose landmarks found no face in the aligned crop" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = _run("invert", str(tiny), "--camera", "ten")
    assert result.exit_code == 2 and "YAW,PITCH" in result.output
    result = _run("invert", str(tiny), "--aligned", "--network", str(tmp_path / "nope.pkl"))
    assert result.exit_code == 1 and "nope.pkl" in result.output


def test_cli_calibrate_pose_refuses_a_model_without_detectable_faces(tmp_path):
    """dlib finds no face in an untrained model's blobs: the calibration says so instead of fitting noise."""
    from stylenerf_edit.generator import save_pretrained
    from stylenerf_edit.generator.network import Generator
    from stylenerf_edit.synthetic.distill import bundled_config

    torch.manual_seed(0)
    model = save_pretrained(Generator(bundled_config(64)), tmp_path / "untrained")
    result = _run("calibrate-pose", "--network", str(model), "--n", "4")
    assert result.exit_code == 1, result.output
    assert "too few of 4 samples" in result.output and "--pose search" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_lpips_resolution_and_coarse_fraction_are_checked_and_used(tmp_path):
    from click.testing import CliRunner

    from stylenerf_edit.cli import main
    from stylenerf_edit.invert.optimize import lpips_input
    from stylenerf_edit.synthetic.dataset import demo_photos

    with pytest.raises(ValueError, match="lpips_resolution"):
        InversionConfig(lpips_resolution=16)
    images = torch.zeros(2, 3, 64, 64)
    assert lpips_input(images, 32).shape == (2, 3, 32, 32) and lpips_input(images).shape == (2, 3, 64, 64)
    runs = {"64": ["--lpips-resolution", "64", "--coarse-fraction", "0"],
            "32": ["--lpips-resolution", "32", "--coarse-fraction", "0"],
            "coarse": ["--lpips-resolution", "64", "--coarse-fraction", "0.5"]}
    history = {}
    for name, args in runs.items():
        out = tmp_path / name
        result = CliRunner().invoke(main, ["invert", str(demo_photos()[1]), "--aligned", "--steps", "2", *args,
                                           "--out", str(out)])
        assert result.exit_code == 0, result.output
        history[name] = np.load(next(out.glob("*/latent.npz")))
    assert not np.allclose(history["64"]["loss_lpips"], history["32"]["loss_lpips"])    # the loss saw other images
    assert history["coarse"]["loss_mse"][0] != pytest.approx(history["64"]["loss_mse"][0], rel=1e-3)   # a 64-px fit
    result = CliRunner().invoke(main, ["invert", str(demo_photos()[1]), "--aligned", "--coarse-fraction", "1",
                                       "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "--coarse-fraction" in result.output
