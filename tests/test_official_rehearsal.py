"""Rehearsal of every command on full-size official FFHQ checkpoints (256, 512, 1024 px) with random weights.

No command had run on a full-size official configuration: the official files are hundreds of MB and cannot be
used in tests. These tests write official-format pickles (``official_pickle_writer``) with the exact
constructor kwargs (spec a.2/a.4, written out from the spec so the tests need no ``../shared``) and the exact
state-dict names, order and shapes (spec b.3) of the three released configurations, filled with random weights
of this package's own generator, and run every command on them. Random weights make meaningless faces; what
is checked is that nothing on the official path fails, and that outputs have the sizes and formats they should.

The 1024 file also carries more than its generator's kwargs imply (released ffhq_1024.pkl is ~37.5 MB larger
than its config predicts, spec a.5): a large discriminator, a ``D_ema`` network and extra top-level entries.

Cost at one torch thread (the whole file): two to three minutes, mostly inversions (the LPIPS network alone
takes ~3 s to build per command), rendering the 20 direction samples and dlib on them. Pose search (``invert
--aligned`` without ``--camera`` on a model without a pose predictor) renders 153 cameras and took 11 minutes
for one photo at 256 px on one CPU thread, so the aligned inversions here start from ``--camera 0,0``; the real
photos go through face detection and the landmark pose instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from conftest import fixtures_dir
from optional import require
from official_pickle_writer import (FFHQ_EXPECTED, FFHQ_RESOLUTIONS, discriminator_state, official_ffhq_init_kwargs,
                                    official_ffhq_shapes, official_ffhq_state, write_official_pickle,
                                    write_official_pickle_with_extras)
from stylenerf_edit.cli import main
from stylenerf_edit.generator.checkpoint import config_from_official, weights_sha256
from stylenerf_edit.generator.network import Generator, GeneratorConfig
from stylenerf_edit.invert.latent import load_latent
from stylenerf_edit.synthetic.dataset import demo_photos

# A discriminator of ~9.5 M float32 values (~38 MB): the order of what ffhq_1024.pkl holds beyond its config.
_D_CHANNELS = {res: min(65536 // res, 512) for res in (1024, 512, 256, 128, 64)}
EXTRA_D_SHAPES = {
    **{name: shape for res in (1024, 512, 256, 128) for name, shape in (
        (f"b{res}.conv0.weight", (_D_CHANNELS[res], _D_CHANNELS[res], 3, 3)),
        (f"b{res}.conv1.weight", (_D_CHANNELS[res // 2], _D_CHANNELS[res], 3, 3)),
        (f"b{res}.skip.weight", (_D_CHANNELS[res // 2], _D_CHANNELS[res], 1, 1)))},
    "b4.fc.weight": (512, 4096), "b4.out.weight": (1, 512),
}
EXTRA_D_FLOATS = sum(int(np.prod(s)) for s in EXTRA_D_SHAPES.values())
INVERT_FILES = {"aligned.png", "reconstruction.png", "latent.npz", "metrics.json"}


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ok(*args: object) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result: Result, *needles: str) -> str:
    """Exit status 1 and a single ``error:`` line on stderr (progress bars aside), no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line.rsplit("\r", 1)[-1] for line in result.stderr.splitlines()]
    errors = [line for line in lines if line.strip() and not _is_progress_bar(line)]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _is_progress_bar(line: str) -> bool:
    return re.match(r"^[^|]*: +\d+%\|.*\| *\d+/\d+ \[", line) is not None


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def official_weights_sha256(state: dict) -> str:
    """What ``info`` reports for these official tensors: the design-constant resample filters are not weights."""
    return weights_sha256({k: v for k, v in state.items() if not k.endswith("resample_filter")})


def grace_hopper() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


# --- the checkpoints -------------------------------------------------------------------------------------------

class Checkpoint:
    """An official-format pickle, the state written into its G_ema, and (once made) its converted directory."""

    def __init__(self, resolution: int, pkl: Path, state: dict):
        self.resolution, self.pkl, self.state = resolution, pkl, state
        self.converted: Path | None = None

    def convert(self) -> Path:
        if self.converted is None:
            out = self.pkl.with_name(f"{self.pkl.stem}_converted")
            result = ok("convert", self.pkl, out)
            assert f"{self.resolution} px" in result.output
            assert f"{FFHQ_EXPECTED[self.resolution]['parameters']:,} parameters" in result.output
            self.converted = out
        return self.converted


@pytest.fixture(scope="session")
def ffhq_256(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    state = official_ffhq_state(256, seed=256)
    path = tmp_path_factory.mktemp("ffhq_256") / "ffhq_256.pkl"
    write_official_pickle(path, official_ffhq_init_kwargs(256), state, use_omegaconf=True)
    return Checkpoint(256, path, state)


@pytest.fixture(scope="session")
def ffhq_512(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """G (training weights) differs from G_ema, as in a real snapshot."""
    state = official_ffhq_state(512, seed=512)
    path = tmp_path_factory.mktemp("ffhq_512") / "ffhq_512.pkl"
    write_official_pickle(path, official_ffhq_init_kwargs(512), state, use_omegaconf=True,
                          training_state_dict=official_ffhq_state(512, seed=513))
    return Checkpoint(512, path, state)


@pytest.fixture(scope="session")
def ffhq_1024(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """More in the file than the generator's kwargs imply: a ~38 MB discriminator, D_ema and extra entries."""
    state = official_ffhq_state(1024, seed=1024)
    path = tmp_path_factory.mktemp("ffhq_1024") / "ffhq_1024.pkl"
    write_official_pickle_with_extras(
        path, official_ffhq_init_kwargs(1024), state, use_omegaconf=True,
        networks={"D": discriminator_state(EXTRA_D_SHAPES, seed=1),
                  "D_ema": discriminator_state({"b4.out.weight": (1, 512)}, seed=2)},
        entries={"progress": {"cur_nimg": 25_000_000, "cur_tick": 6250, "batch_idx": 390625},
                 "encoder_kwargs": None})
    return Checkpoint(1024, path, state)


def checkpoint(request: pytest.FixtureRequest, resolution: int) -> Checkpoint:
    """Looked up lazily: a test of one resolution builds only that file."""
    return request.getfixturevalue(f"ffhq_{resolution}")


# --- the package's generator is the official configuration ---------------------------------------------------

@pytest.mark.parametrize("resolution", FFHQ_RESOLUTIONS)
def test_package_defaults_are_the_official_ffhq_configuration(resolution: int) -> None:
    """Our default config equals what the reader makes of the official kwargs and tensors; counts match spec a.3."""
    expected = FFHQ_EXPECTED[resolution]
    shapes = official_ffhq_shapes(resolution)
    assert len(shapes) == expected["entries"]
    state = official_ffhq_state(resolution)
    assert list(state) == list(shapes) and all(tuple(state[k].shape) == s for k, s in shapes.items())
    cfg = GeneratorConfig(img_resolution=resolution)
    assert config_from_official(official_ffhq_init_kwargs(resolution), state) == cfg
    G = Generator(cfg)
    assert sum(p.numel() for p in G.parameters()) == expected["parameters"]
    filters = [k for k in shapes if k.endswith("resample_filter")]
    assert sum(b.numel() for b in G.buffers()) + 16 * len(filters) == expected["buffer_elements"]
    assert list(G.state_dict()) == [k for k in shapes if not k.endswith("resample_filter")]
    assert G.num_ws == expected["num_ws"]
    assert cfg.block_resolutions[-1] == resolution and cfg.block_channels[-1] == 32768 // resolution


def test_spec_transcription_matches_the_official_fixture() -> None:
    """The kwargs and names written from the spec equal those the official code recorded (128 px fixture)."""
    directory = fixtures_dir()
    if not (directory / "g_init_kwargs.json").is_file() or not (directory / "g_state_fp16exact.npz").is_file():
        pytest.skip(f"official fixtures not found in {directory}; the spec transcription is checked against them "
                    "where they exist")
    fixture = json.loads((directory / "g_init_kwargs.json").read_text())
    assert official_ffhq_init_kwargs(128) == fixture["init_kwargs"]
    shapes = official_ffhq_shapes(128)
    assert list(shapes) == fixture["state_dict_keys"]
    with np.load(directory / "g_state_fp16exact.npz") as z:
        assert {k: tuple(z[k].shape) for k in z.files} == dict(shapes)


# --- info, convert, render at every size ------------------------------------------------------------------------

@pytest.mark.parametrize("resolution", FFHQ_RESOLUTIONS)
def test_info_convert_render(request: pytest.FixtureRequest, resolution: int) -> None:
    ckpt = checkpoint(request, resolution)
    expected = FFHQ_EXPECTED[resolution]
    official = json.loads(ok("info", ckpt.pkl, "--json").output)
    assert official["format"] == "official-pickle" and official["img_resolution"] == resolution
    assert official["num_ws"] == expected["num_ws"] and official["parameter_count"] == expected["parameters"]
    assert official["config"] == json.loads(json.dumps(GeneratorConfig(img_resolution=resolution).to_dict()))
    assert official["weights_sha256"] == official_weights_sha256(ckpt.state)   # every value read back exactly
    text = ok("info", ckpt.pkl).output
    assert f"{expected['parameters']:,}" in text and official["file_sha256"] in text

    converted = ckpt.convert()
    assert {p.name for p in converted.iterdir()} == {"config.json", "model.safetensors"}
    native = json.loads(ok("info", converted, "--json").output)
    assert native["format"] == "safetensors"
    assert native["weights_sha256"] == official["weights_sha256"] and native["config"] == official["config"]

    out = ckpt.pkl.parent / "render"
    ok("render", "--network", ckpt.pkl, "--seed", "3", "--yaw", "15", "--out", out / "pkl")
    image = rgb(out / "pkl" / "seed0003.png")
    assert image.shape == (resolution, resolution, 3) and image.std() > 0
    if resolution == 256:   # the converted weights render the same image (checked at 256 only, for time)
        ok("render", "--network", converted, "--seed", "3", "--yaw", "15", "--out", out / "converted")
        np.testing.assert_array_equal(rgb(out / "converted" / "seed0003.png"), image)


def test_1024_file_with_more_than_its_config_implies(ffhq_1024: Checkpoint) -> None:
    """The reader takes G_ema and ignores a large D, D_ema and unknown top-level entries (spec a.5, d.1)."""
    generator_bytes = 4 * FFHQ_EXPECTED[1024]["parameters"]
    assert EXTRA_D_FLOATS > 9_000_000
    assert ffhq_1024.pkl.stat().st_size > 2 * generator_bytes + 4 * EXTRA_D_FLOATS
    # A fresh interpreter through the console entry point, as a user runs it.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "stylenerf_edit.cli", "info", "--json", str(ffhq_1024.pkl)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["img_resolution"] == 1024 and info["num_ws"] == 21
    assert info["weights_sha256"] == official_weights_sha256(ffhq_1024.state)


def test_key_g_reads_the_training_generator(ffhq_512: Checkpoint, tmp_path: Path) -> None:
    ema = json.loads(ok("info", ffhq_512.pkl, "--json").output)
    training = json.loads(ok("info", ffhq_512.pkl, "--key", "G", "--json").output)
    assert training["weights_sha256"] == official_weights_sha256(official_ffhq_state(512, seed=513))
    assert training["weights_sha256"] != ema["weights_sha256"] and training["config"] == ema["config"]


def test_kwargs_that_disagree_with_the_tensors_are_resolved_from_the_shapes(tmp_path: Path) -> None:
    """Sizes come from the tensors: kwargs predicting other widths or kernels do not change the generator."""
    kwargs = official_ffhq_init_kwargs(256)
    syn = kwargs["synthesis_kwargs"]
    syn.update(channel_base=2, kernel_size=3, num_fp16_res=0)
    syn["upsampler_kwargs"].update(channel_base=2, channel_max=512)
    state = official_ffhq_state(256, seed=7)
    path = tmp_path / "ffhq_256_other_kwargs.pkl"
    write_official_pickle(path, kwargs, state, use_omegaconf=True)
    info = json.loads(ok("info", path, "--json").output)
    assert info["config"] == json.loads(json.dumps(GeneratorConfig(img_resolution=256).to_dict()))
    assert info["weights_sha256"] == official_weights_sha256(state)


def test_extra_generator_tensors_are_refused_in_one_line(tmp_path: Path) -> None:
    """G_ema with a tensor this generator does not have: refused with its name (the official loader would skip it)."""
    state = official_ffhq_state(256, seed=8)
    state["synthesis.b256.conv1.extra_scale"] = state["synthesis.b256.conv1.bias"].clone()
    path = tmp_path / "ffhq_256_extra_tensor.pkl"
    write_official_pickle(path, official_ffhq_init_kwargs(256), state, use_omegaconf=True)
    assert_one_line_error(run("info", path), str(path), "synthesis.b256.conv1.extra_scale")


# --- inversion -------------------------------------------------------------------------------------------------

def invert_aligned(ckpt: Checkpoint, network: Path, out: Path) -> Path:
    """One step on the shipped near-frontal photo, as an aligned crop, from the frontal camera; the photo's folder."""
    photo = demo_photos()[1]
    result = ok("invert", photo, "--network", network, "--aligned", "--steps", 1, "--camera", "0,0", "--out", out)
    assert "PSNR" in result.stdout
    folder = out / photo.stem
    assert INVERT_FILES <= {p.name for p in folder.iterdir()}
    for name in ("aligned.png", "reconstruction.png"):
        assert rgb(folder / name).shape == (ckpt.resolution, ckpt.resolution, 3)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["pose_method"] == "given" and np.isfinite(metrics["psnr"]) and np.isfinite(metrics["lpips"])
    return folder


@pytest.mark.parametrize("resolution", [512, 1024])
def test_invert_aligned_one_step(request: pytest.FixtureRequest, resolution: int, tmp_path: Path) -> None:
    from stylenerf_edit.generator import describe

    ckpt = checkpoint(request, resolution)
    folder = invert_aligned(ckpt, ckpt.pkl, tmp_path)
    latent = load_latent(folder / "latent.npz", generator=describe(ckpt.pkl))
    assert latent.ws.shape == (FFHQ_EXPECTED[resolution]["num_ws"], 512)


@pytest.fixture(scope="module")
def inverted_256(ffhq_256: Checkpoint) -> Path:
    """A real photo inverted into the 256 checkpoint's converted directory: face detection, alignment, landmark
    pose, one step, paste-back. (The aligned path is the 512 and 1024 tests'.) The photo's output folder."""
    photo = grace_hopper()
    out = ffhq_256.pkl.parent / "inverted"
    result = ok("invert", photo, "--network", ffhq_256.convert(), "--steps", 1, "--paste-back", "--out", out)
    assert "PSNR" in result.stdout
    return out / photo.stem


def test_invert_real_photo_256(inverted_256: Path, ffhq_256: Checkpoint) -> None:
    from stylenerf_edit.generator import describe

    assert INVERT_FILES | {"pasted.png"} <= {p.name for p in inverted_256.iterdir()}
    assert rgb(inverted_256 / "aligned.png").shape == rgb(inverted_256 / "reconstruction.png").shape == (256, 256, 3)
    assert Image.open(inverted_256 / "pasted.png").size == Image.open(grace_hopper()).size
    metrics = json.loads((inverted_256 / "metrics.json").read_text())
    assert metrics["pose_method"] == "landmarks" and np.isfinite(metrics["psnr"]) and np.isfinite(metrics["lpips"])
    latent = load_latent(inverted_256 / "latent.npz", generator=describe(ffhq_256.pkl))  # the pickle's weights too
    assert latent.ws.shape == (17, 512) and latent.bg_code.shape == (32,)


def test_aligned_crop_of_a_face_takes_its_pose_from_landmarks(inverted_256: Path, ffhq_256: Checkpoint,
                                                             tmp_path: Path) -> None:
    """An aligned crop on a model without a pose predictor: landmarks found on the crop itself, where the pose
    search over 153 rendered views took 11 minutes at 256 px on one thread."""
    crop = tmp_path / "crop.png"
    crop.write_bytes((inverted_256 / "aligned.png").read_bytes())
    ok("invert", crop, "--aligned", "--network", ffhq_256.convert(), "--steps", 1, "--out", tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "crop" / "metrics.json").read_text())
    original = json.loads((inverted_256 / "metrics.json").read_text())
    assert metrics["pose_method"] == "landmarks"
    # dlib's jaw contour on the 256-px crop is up to 14 px off the one found in the full photo: 8.9 deg of yaw.
    start, expected = metrics["initial_camera"], original["initial_camera"]
    assert abs(start["yaw"] - expected["yaw"]) < 10 and abs(start["pitch"] - expected["pitch"]) < 3


# --- directions, edit, batch, calibrate-pose at 256 ------------------------------------------------------------

SAMPLES = 20   # the fewest `directions train` accepts


@pytest.fixture(scope="module")
def scores_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made-up smile scores (random faces have no detectable face to score)."""
    path = tmp_path_factory.mktemp("scores") / "scores.csv"
    values = np.random.default_rng(0).normal(size=SAMPLES)
    path.write_text("index,smile\n" + "".join(f"{i},{v:.4f}\n" for i, v in enumerate(values)))
    return path


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by every `directions train` run here: the samples are rendered once, later runs resume."""
    return tmp_path_factory.mktemp("samples") / "samples"


@pytest.fixture(scope="module")
def smile_direction(ffhq_256: Checkpoint, scores_csv: Path, samples_dir: Path) -> Path:
    """Trained on the converted directory and installed beside it; used with the pickle (same weights)."""
    out = ffhq_256.pkl.parent / "directions"
    result = ok("directions", "train", "--network", ffhq_256.convert(), "--attribute", "smile",
                "--labeler", f"file:{scores_csv}", "--samples", SAMPLES, "--ratio", "0.4",
                "--samples-dir", samples_dir, "--out", out, "--install")
    assert "smile: validation accuracy" in result.stdout and "installed as" in result.stdout
    assert (ffhq_256.convert() / "directions" / "smile.npz").is_file()
    return out / "smile.npz"


def test_directions_train_and_list(smile_direction: Path, ffhq_256: Checkpoint) -> None:
    listed = ok("directions", "list", "--network", ffhq_256.convert()).stdout
    assert "smile.npz" in listed and f"({SAMPLES} samples" in listed
    listed = ok("directions", "list", "--network", ffhq_256.pkl, "--directions", smile_direction.parent).stdout
    assert str(smile_direction) in listed


def test_directions_train_says_how_many_samples_its_ratio_needs(ffhq_256: Checkpoint, scores_csv: Path,
                                                                 tmp_path: Path) -> None:
    """At --samples 20 and the default --ratio 0.2 the SVM would get 2 training samples per side: refused at once,
    before anything is rendered, with the smallest count that works."""
    result = run("directions", "train", "--network", ffhq_256.convert(), "--attribute", "smile", "--labeler",
                 f"file:{scores_csv}", "--samples", SAMPLES, "--out", tmp_path)
    assert_one_line_error(result, f"--samples {SAMPLES} at --ratio 0.2 leaves 2 training samples per side",
                          "--samples 25 or more")
    assert not (tmp_path / "samples").exists()


def test_directions_train_with_landmarks_on_random_faces_fails_in_one_line(ffhq_256: Checkpoint, samples_dir: Path,
                                                                          tmp_path: Path) -> None:
    """dlib finds no face on random-weight renders: one clear line, no traceback, no direction written. (~1 s per
    sample: without a HOG detection dlib's CNN detector runs.)"""
    result = run("directions", "train", "--network", ffhq_256.convert(), "--attribute", "smile", "--labeler",
                 "landmarks", "--samples", SAMPLES, "--ratio", "0.4", "--samples-dir", samples_dir,
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "too few scored samples", f"0 of {SAMPLES}")
    assert not (tmp_path / "out" / "smile.npz").exists()


def test_edit(inverted_256: Path, smile_direction: Path, ffhq_256: Checkpoint, tmp_path: Path) -> None:
    """The latent (inverted with the converted weights) edited through the pickle, by direction name."""
    latent_256 = inverted_256 / "latent.npz"
    result = ok("edit", latent_256, "--edit", "smile=2", "--network", ffhq_256.pkl,
                "--directions", smile_direction.parent, "--views", "0", "--out", tmp_path)
    assert "smile" in result.stdout
    assert {"latent.npz", "edited.png", "before_after.png"} <= {p.name for p in tmp_path.iterdir()}
    assert rgb(tmp_path / "edited.png").shape == (256, 256, 3)
    from stylenerf_edit.generator import describe

    before = load_latent(latent_256)
    after = load_latent(tmp_path / "latent.npz", generator=describe(ffhq_256.pkl))
    assert after.ws.shape == before.ws.shape and not np.allclose(after.ws, before.ws)


def test_pti_then_edit_256(ffhq_256: Checkpoint, smile_direction: Path, tmp_path: Path) -> None:
    """`invert --pti` on the 256 checkpoint writes a tuning of the upsampler (float16 differences, its size as the
    tuned tensors imply), and `edit` of that latent renders with it: the tuned generator's picture differs."""
    from safetensors import safe_open

    from stylenerf_edit.generator import describe

    photo = demo_photos()[1]
    out = tmp_path / "inv"
    result = ok("invert", photo, "--network", ffhq_256.pkl, "--aligned", "--steps", 1, "--camera", "0,0",
                "--pti", "--pti-steps", 2, "--out", out)
    assert "tuned: PSNR" in result.stdout
    folder = out / photo.stem
    tuning = folder / "tuning.safetensors"
    with safe_open(str(tuning), framework="pt") as f:
        names = list(f.keys())
        elements = sum(int(np.prod(f.get_slice(n).get_shape())) for n in names)
    assert names and all(n.startswith("synthesis.b") for n in names)
    assert tuning.stat().st_size < 2 * elements + 64 * 1024      # float16 values plus a header
    edits = {}
    for name, move in (("tuned", None), ("base", folder.with_name("untuned"))):
        latent = folder / "latent.npz"
        if move is not None:        # the same latent without its tuning beside it
            move.mkdir()
            latent = move / "latent.npz"
            latent.write_bytes((folder / "latent.npz").read_bytes())
        ok("edit", latent, "--edit", "smile=2", "--network", ffhq_256.pkl, "--directions", smile_direction.parent,
           "--views", "0", "--out", tmp_path / name)
        edits[name] = rgb(tmp_path / name / "edited.png")
    assert edits["tuned"].shape == (256, 256, 3)
    assert np.abs(edits["tuned"].astype(int) - edits["base"].astype(int)).mean() > 0.1
    assert load_latent(folder / "latent.npz", generator=describe(ffhq_256.pkl)).ws.shape[0] == \
        FFHQ_EXPECTED[256]["num_ws"]


def test_the_web_editor_serves_the_256_model(inverted_256: Path, smile_direction: Path, ffhq_256: Checkpoint,
                                             tmp_path: Path) -> None:
    """The editor's workspace on the pickle: the inverted latent opened, edited with the trained direction,
    previewed and rendered as `edit` renders it (the export's sweep is the bundled model's test)."""
    require("starlette", "uvicorn", install="pip install 'stylenerf-edit[web]'")
    from stylenerf_edit.editing.outputs import edit_latent_file
    from stylenerf_edit.web.editor import EditorModel, View, Workspace

    model = EditorModel(ffhq_256.pkl, directions=[smile_direction.parent])
    assert [s.name for s in model.sliders()] == ["smile"]
    workspace = Workspace(model, tmp_path / "visitor")
    workspace.open_latent(inverted_256 / "latent.npz")
    view = View({"smile": 1.0}, yaw=10.0, pitch=0.0)
    assert workspace.render(view, preview=True).image.shape == (128, 128, 3)
    image = workspace.render(view).image
    edit_latent_file(inverted_256 / "latent.npz", ["smile=1.0"], tmp_path / "cli", network=ffhq_256.pkl,
                     directions=[smile_direction.parent], yaws=(0.0,), camera=(10.0, 0.0))
    assert np.array_equal(image, rgb(tmp_path / "cli" / "edited.png")) and image.shape == (256, 256, 3)


def test_batch(ffhq_256: Checkpoint, tmp_path: Path) -> None:
    """Two real photos (faces detected, landmark pose), one step. (Edits are the edit test's: the same code
    renders them, and a batch edit would add ~9 s.)"""
    src = tmp_path / "in"
    src.mkdir()
    grace = Image.open(grace_hopper()).convert("RGB")
    grace.save(src / "grace.jpg", quality=95)
    grace.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(src / "mirrored.png")
    out = tmp_path / "out"
    result = ok("batch", src, "--out", out, "--network", ffhq_256.pkl, "--steps", 1)
    assert re.search(r"^done +2 ", result.stdout, re.M) and re.search(r"^failed +0 ", result.stdout, re.M), \
        result.output
    for name in ("grace", "mirrored"):
        folder = out / name
        assert INVERT_FILES <= {p.name for p in folder.iterdir()}, result.output
        assert rgb(folder / "reconstruction.png").shape == (256, 256, 3)
        assert json.loads((folder / "metrics.json").read_text())["pose_method"] == "landmarks"


def test_calibrate_pose_on_random_faces_fails_in_one_line(ffhq_256: Checkpoint) -> None:
    """No landmarks on random-weight renders: one clear line, and no calibration file beside the model."""
    assert_one_line_error(run("calibrate-pose", "--network", ffhq_256.pkl, "--n", 3), str(ffhq_256.pkl),
                          "too few")
    assert not list(ffhq_256.pkl.parent.glob("*pose_calibration*"))
