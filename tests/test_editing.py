"""Edits on the bundled model: row groups, strengths, shipped directions, the edit/directions/demo commands."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from stylenerf_edit.cli import main
from stylenerf_edit.directions.library import available_directions, resolve_direction
from stylenerf_edit.directions.direction import Direction, DirectionError
from stylenerf_edit.editing.edit import (Edit, EditError, apply_edits, check_edits, clamp_edits, edit_latent,
                                         interpolate, parse_edit, row_group, sample_range, style_mix)
from stylenerf_edit.editing.views import parse_views
from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import load_with_info
from stylenerf_edit.invert.latent import GeneratorRef, Latent, load_latent
from stylenerf_edit.synthetic.predictor import AttributePredictor

SHIPPED = ("smile", "age", "glasses", "hair_color")


@pytest.fixture(scope="module")
def bundled():
    return load_with_info("bundled:heads")


def _direction(info, axis: int = 0, spread: float = 2.0) -> Direction:
    v = np.zeros(512, dtype=np.float32)
    v[axis] = 1
    return Direction(attribute=f"axis{axis}", vector=v, space="w", rows=None, offset=0.0, spread=spread,
                     generator=GeneratorRef.from_info(info))


def _latent(G, info, seed: int = 0) -> Latent:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(G.sample_z(1, gen), truncation_psi=0.7)[0]
    return Latent(ws=ws.numpy(), camera=Camera(yaw=10.0), bg_code=G.sample_bg_code(1, gen)[0].numpy(),
                  generator=GeneratorRef.from_info(info), source=f"seed {seed}")


def test_row_groups_of_the_bundled_model(bundled):
    G, _ = bundled
    assert G.num_ws == 11 and G.cfg.fg_layers == 4
    assert row_group(G.cfg, "geometry") == [0, 1, 2, 3, 4]
    assert row_group(G.cfg, "appearance") == [5]
    assert row_group(G.cfg, "nerf") == [0, 1, 2, 3, 4, 5]
    assert row_group(G.cfg, "upsampler") == [6, 7, 8, 9, 10]
    assert row_group(G.cfg, "all") == list(range(11))
    assert row_group(G.cfg, "0-2, 7") == [0, 1, 2, 7]
    for bad in ("colour", "3-x", "0-11", ""):
        with pytest.raises(EditError):
            row_group(G.cfg, bad)


def test_parse_edit_and_views():
    assert parse_edit("smile=+2") == ("smile", 2.0)
    assert parse_edit("dirs/my=dir.npz=-1.5") == ("dirs/my=dir.npz", -1.5)
    for bad in ("smile", "=2", "smile=lots", "smile=nan"):
        with pytest.raises(EditError, match="NAME=STRENGTH"):
            parse_edit(bad)
    assert parse_views("-30:30:5") == [-30.0, -15.0, 0.0, 15.0, 30.0]
    assert parse_views("-20,0,20") == [-20.0, 0.0, 20.0]
    with pytest.raises(Exception, match="START:STOP:COUNT"):
        parse_views("a:b")


def test_strength_counts_standard_deviations_on_the_chosen_rows(bundled):
    G, info = bundled
    d = _direction(info, axis=3, spread=2.5)
    ws = torch.zeros(2, 9, 512)
    out = apply_edits(ws, [Edit(d, 2.0, rows=(6, 7, 8))])
    assert out.shape == ws.shape
    assert torch.equal(out[:, :6], ws[:, :6])
    assert torch.allclose(out[:, 6:, 3], torch.full((2, 3), 5.0)) and out[:, 6:].abs().sum() == 15.0 * 2
    both = apply_edits(ws[0], [Edit(d, 1.0), Edit(_direction(info, axis=4, spread=1.0), -1.0)])
    assert torch.allclose(both[:, 3], torch.full((9,), 2.5)) and torch.allclose(both[:, 4], torch.full((9,), -1.0))
    d_plain = replace(d, spread=float("nan"))
    with pytest.raises(EditError, match="spread"):
        apply_edits(ws, [Edit(d_plain, 1.0)])


def test_edit_latent_keeps_camera_background_and_records_edits(bundled):
    G, info = bundled
    latent = _latent(G, info)
    edited = edit_latent(latent, [Edit(_direction(info), 1.0)])
    assert edited.camera == latent.camera and np.array_equal(edited.bg_code, latent.bg_code)
    assert edited.extra["edits"] == ["axis0 +1"] and edited.source == latent.source
    np.testing.assert_allclose(edited.ws[:, 0] - latent.ws[:, 0], 2.0, rtol=1e-6)
    foreign = replace(_direction(info), generator=replace(GeneratorRef.from_info(info), name="ffhq_256",
                                                           weights_sha256="f" * 64))
    with pytest.raises(EditError, match="ffhq_256"):
        edit_latent(latent, [Edit(foreign, 1.0)])


def test_style_mix_and_interpolation(bundled):
    G, info = bundled
    a, b = _latent(G, info, 1), replace(_latent(G, info, 2), camera=Camera(yaw=-20.0, pitch=4.0))
    mixed = style_mix(torch.from_numpy(a.ws), torch.from_numpy(b.ws), row_group(G.cfg, "upsampler"))
    assert torch.equal(mixed[:6], torch.from_numpy(a.ws[:6])) and torch.equal(mixed[6:], torch.from_numpy(b.ws[6:]))
    half = interpolate(a, b, 0.5)
    np.testing.assert_allclose(half.ws, (a.ws + b.ws) / 2, rtol=1e-6)
    assert half.camera.yaw == pytest.approx(-5.0) and half.camera.pitch == pytest.approx(2.0)
    assert interpolate(a, b, 0.0).ws.tobytes() == a.ws.tobytes()


@pytest.mark.parametrize("attribute", ["smile", "age", "hair_color"])
def test_shipped_directions_move_the_predictor_score(bundled, attribute):
    """Edits of +-2 on eight held-out latents move the bundled predictor's reading the right way."""
    G, info = bundled
    d = resolve_direction(attribute, "bundled:heads", info)
    assert d.val_accuracy >= 0.9 and d.generator.weights_sha256 == info.weights_sha256
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        ws = G.mapping(G.sample_z(8, gen), truncation_psi=0.7)
        bg = G.sample_bg_code(8, gen)
        cams = [G.camera_prior.frontal()] * 8
        lo, hi = (G.synthesize(apply_edits(ws, [Edit(d, s)]), cams, bg).img for s in (-2.0, 2.0))
    predictor = AttributePredictor.from_pretrained()
    change = predictor.predict(hi)[attribute] - predictor.predict(lo)[attribute]
    assert (change > 0).float().mean() >= 0.75 and change.mean() > 0.1, change


def test_shipped_directions_are_listed(bundled):
    found = available_directions("bundled:heads")
    assert set(SHIPPED) <= set(found)
    result = CliRunner().invoke(main, ["directions", "list"])
    assert result.exit_code == 0 and all(name in result.output for name in SHIPPED)
    _, info = bundled
    with pytest.raises(DirectionError, match="no direction named 'beard'"):
        resolve_direction("beard", "bundled:heads", info)
    # Names match whatever their case or separator; a near miss gets a suggestion.
    smile = resolve_direction("smile", "bundled:heads", info)
    for spelling in ("Smile", "SMILE"):
        assert np.array_equal(resolve_direction(spelling, "bundled:heads", info).vector, smile.vector)
    hair = resolve_direction("hair_color", "bundled:heads", info)
    assert np.array_equal(resolve_direction("Hair-Color", "bundled:heads", info).vector, hair.vector)
    with pytest.raises(DirectionError, match="did you mean 'smile'"):
        resolve_direction("smiel", "bundled:heads", info)
    with pytest.raises(DirectionError, match="did you mean 'glasses'"):
        resolve_direction("glases", "bundled:heads", info)


def _inverted(tmp_path: Path) -> Path:
    from stylenerf_edit.synthetic.dataset import demo_photos

    result = CliRunner().invoke(main, ["invert", str(demo_photos()[1]), "--aligned", "--steps", "2", "--out",
                                       str(tmp_path / "inv")])
    assert result.exit_code == 0, result.output
    return tmp_path / "inv" / demo_photos()[1].stem / "latent.npz"


def test_cli_edit_writes_its_files(tmp_path):
    latent = _inverted(tmp_path)
    out = tmp_path / "edited"
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", "smile=2", "--edit", "age=-1", "--rows",
                                       "nerf", "--views", "-20:20:3", "--pitches", "-10,10", "--sweep", "--out",
                                       str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"latent.npz", "edited.png", "before_after.png", "grid.png",
                                               "sweep.gif", "sweep.mp4", "edit.json"}
    R = Image.open(out / "edited.png").size[0]
    sheet = np.asarray(Image.open(out / "before_after.png").convert("L"), dtype=np.float64)
    label, header = sheet.shape[1] - 3 * R, sheet.shape[0] - 2 * R      # labelled rows and columns
    assert label > 20 and header > 5
    assert sheet[header:, :label].min() < 100 and sheet[:header, label:].min() < 100      # text in both
    tiles = sheet[header:, label:]
    assert np.abs(tiles[:R] - tiles[R:]).mean() > 1           # before, then after
    assert Image.open(out / "grid.png").size == (3 * R, 2 * R)
    # Without --edit: the latent as inverted, one unedited row, the same still as `render` draws.
    result = CliRunner().invoke(main, ["edit", str(latent), "--views", "-20:20:3", "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0 and result.output.startswith("unedited: "), result.output
    assert Image.open(tmp_path / "plain" / "before_after.png").size[1] - R == header
    assert CliRunner().invoke(main, ["render", str(latent), "--out", str(tmp_path / "r")]).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "plain" / "edited.png")),
                          np.asarray(Image.open(tmp_path / "r" / f"{latent.parent.name}.png")))
    # --camera: the edit seen from another view, which the edited latent keeps
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", "smile=1", "--camera", "20,-4", "--out",
                                       str(tmp_path / "turned")])
    assert result.exit_code == 0, result.output
    turned = load_latent(tmp_path / "turned" / "latent.npz")
    assert (turned.camera.yaw, turned.camera.pitch) == (20.0, -4.0)
    assert CliRunner().invoke(main, ["render", str(tmp_path / "turned" / "latent.npz"), "--out",
                                     str(tmp_path / "rt")]).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "turned" / "edited.png")),
                          np.asarray(Image.open(tmp_path / "rt" / "turned.png")))
    assert "YAW,PITCH" in CliRunner().invoke(main, ["edit", str(latent), "--camera", "20"]).output
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", "beard=1", "--out", str(out)])
    assert result.exit_code == 1 and "no direction named 'beard'" in result.output
    result = CliRunner().invoke(main, ["edit", str(tmp_path / "none.npz"), "--edit", "smile=1"])
    assert result.exit_code == 1 and "no such latent file" in result.output


def test_edit_never_replaces_a_file_it_did_not_write(tmp_path):
    """``--out`` at the inversion's own folder used to overwrite its latent.npz with the edited one."""
    latent = _inverted(tmp_path)
    before = latent.read_bytes()
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", "smile=1", "--out", str(latent.parent)])
    assert result.exit_code == 1 and f"{latent}: already exists and was not written" in result.output
    assert len(result.output.strip().splitlines()) == 1 and latent.read_bytes() == before
    assert not (latent.parent / "edited.png").exists() and not (latent.parent / "edit.json").exists()

    out = tmp_path / "edited"
    for strength in ("1", "2"):             # a rerun replaces the edit's own, unchanged files
        result = CliRunner().invoke(main, ["edit", str(latent), "--edit", f"smile={strength}", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "edit.json").read_text())["edits"] == [f"smile {float(strength):+g}"]
    (out / "edited.png").write_bytes(b"the user's retouched image")
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", "smile=3", "--out", str(out)])
    assert result.exit_code == 1 and f"{out / 'edited.png'}: already exists" in result.output
    assert (out / "edited.png").read_bytes() == b"the user's retouched image"
    (out / "edited.png").unlink()
    (out / "edit.json").write_text("my notes")
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", "smile=3", "--out", str(out)])
    assert result.exit_code == 1 and "is not the record" in result.output
    assert (out / "edit.json").read_text() == "my notes"


def test_demo_refuses_a_users_file_before_inverting(tmp_path):
    out = tmp_path / "demo"
    (out / "smile+2").mkdir(parents=True)
    (out / "smile+2" / "sweep.gif").write_bytes(b"mine")
    result = CliRunner().invoke(main, ["demo", "--steps", "2", "--out", str(out)])
    assert result.exit_code == 1 and "sweep.gif: already exists" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["smile+2"]       # nothing inverted, nothing written
    (out / "smile+2" / "sweep.gif").unlink()
    (out / "index.html").write_text("<p>my page</p>")
    result = CliRunner().invoke(main, ["demo", "--steps", "2", "--out", str(out)])
    assert result.exit_code == 1 and "index.html: already exists" in result.output
    assert (out / "index.html").read_text() == "<p>my page</p>"
    (out / "index.html").unlink()
    from stylenerf_edit.demo import run_demo
    from stylenerf_edit.directions.direction import DirectionError
    with pytest.raises(DirectionError, match="no direction named 'beard'"):
        run_demo(out, edits=["beard=1"], steps=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["smile+2"]       # refused before inverting


def test_edits_are_checked_against_the_models_own_samples(bundled):
    G, info = bundled
    age = resolve_direction("age", "bundled:heads", info)
    r = sample_range(G, age)
    assert -3 < r.low < -2 < 2 < r.high < 3 and r.coverage == 0.99     # about +-2.6 sd of a normal spread
    ws = torch.from_numpy(_latent(G, info).ws)
    inside, far = check_edits(G, ws, [Edit(age, 1.0)])[0], check_edits(G, ws, [Edit(age, 6.0)])[0]
    assert inside.inside and not far.inside and far.per_unit == pytest.approx(1.0, abs=1e-4)
    assert far.after - far.before == pytest.approx(6.0, abs=1e-3)
    (shorter,) = clamp_edits([far])
    assert 0 < shorter.strength < 6
    (again,) = check_edits(G, ws, [shorter])
    assert again.inside and again.after == pytest.approx(r.high, abs=1e-3)
    assert clamp_edits([inside])[0].strength == 1.0


def test_cli_edit_warns_and_clamps_edits_beyond_the_models_range(tmp_path):
    latent = _inverted(tmp_path)
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", "age=6", "--views", "0", "--out",
                                       str(tmp_path / "warned")])
    assert result.exit_code == 0 and "warning: age +6 takes the latent from" in result.stderr
    assert "outside the 99% of the model's own samples" in result.stderr
    assert json.loads((tmp_path / "warned" / "edit.json").read_text())["edits"] == ["age +6"]
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", "age=6", "--views", "0", "--clamp", "--out",
                                       str(tmp_path / "clamped")])
    assert result.exit_code == 0 and "clamped to the model's range: age +" in result.stderr
    (applied,) = json.loads((tmp_path / "clamped" / "edit.json").read_text())["edits"]
    assert applied.startswith("age +") and 1 < float(applied.split()[1]) < 6


def test_cli_directions_train_and_use_the_result(tmp_path):
    out = tmp_path / "dirs"
    result = CliRunner().invoke(main, ["directions", "train", "--attribute", "age", "--condition", "yaw",
                                       "--samples", "60", "--ratio", "0.3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "age.npz").is_file() and "validation accuracy" in result.output
    assert len(list((out / "samples").glob("chunk_*.npz"))) == 1
    latent = _inverted(tmp_path)
    result = CliRunner().invoke(main, ["edit", str(latent), "--edit", f"{out / 'age.npz'}=1", "--out",
                                       str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["directions", "train", "--attribute", "beard", "--samples", "60",
                                       "--out", str(out)])
    assert result.exit_code == 1 and "beard" in result.output


def test_cli_demo(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--steps", "2", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    demo = tmp_path / "demo"
    overview = Image.open(demo / "overview.png")
    assert overview.size[1] == 7 * 128      # photo/fit, views, five edits
    html = (demo / "index.html").read_text()
    assert "overview.png" in html and "smile+2/sweep.gif" in html
    assert (demo / "age-2" / "sweep.mp4").is_file() and (demo / "glasses+2" / "sweep.gif").is_file()
    assert (demo / "inversion").is_dir()
    metrics = json.loads(next((demo / "inversion").glob("*/metrics.json")).read_text())
    assert metrics["pose_method"] == "predictor"
    assert set(json.loads((demo / "demo.json").read_text())["files"]) == {"overview.png", "index.html"}
    result = CliRunner().invoke(main, ["demo", "--steps", "2", "--out", str(demo)])    # a rerun replaces its own
    assert result.exit_code == 0, result.output


def test_render_draws_a_latent_at_its_own_camera_at_new_yaws_and_as_a_sweep(bundled, tmp_path):
    from stylenerf_edit.editing.views import render_views
    from stylenerf_edit.invert.latent import save_latent

    G, info = bundled
    latent = replace(_latent(G, info, seed=4), camera=Camera(yaw=14.0, pitch=6.0))
    path = save_latent(latent, tmp_path / "inv" / "anna" / "latent.npz")
    ws, bg = torch.from_numpy(latent.ws)[None], torch.from_numpy(latent.bg_code)[None]

    def run(*args):
        return CliRunner().invoke(main, ["render", *map(str, args), "--out", str(tmp_path / "out")])

    result = run(path)
    assert result.exit_code == 0, result.output
    own = np.asarray(Image.open(tmp_path / "out" / "anna.png"))
    assert np.array_equal(own, render_views(G, ws, bg, [latent.camera])[0])     # its camera and background code
    result = run(path, "--yaw", "-20:20:3")
    assert result.exit_code == 0, result.output
    views = render_views(G, ws, bg, [latent.camera.with_(yaw=y) for y in (-20.0, 0.0, 20.0)])
    for y, expected in zip(("-20", "+0", "+20"), views):         # the latent's pitch kept
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"anna_yaw{y}.png")), expected)
    assert np.asarray(Image.open(tmp_path / "out" / "anna_views.png")).shape[1] == 3 * G.img_resolution
    result = run(path, "--sweep", "--frames", "3")
    assert result.exit_code == 0 and Image.open(tmp_path / "out" / "anna_sweep.gif").n_frames == 4

    for args, message in (((), "not both and not neither"), ((path, "--seed", "1"), "not both and not neither"),
                          ((path, "--yaw", "a:b"), "views 'a:b'")):
        result = run(*args)
        assert result.exit_code != 0 and message in result.output, result.output
    result = run(tmp_path / "missing.npz")
    assert result.exit_code == 1 and "no such latent file" in result.output and "Traceback" not in result.output
