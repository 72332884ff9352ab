"""Sample folders for edit directions (deterministic, resumable, validated) and the labelers that score them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylenerf_edit.directions.labelers import (ClipLabeler, FileLabeler, Labeler, LabelerError, LandmarkLabeler,
                                                PredictorLabeler, label_samples, load_labels, make_labeler,
                                                mouth_scores)
from stylenerf_edit.directions.sample import SampleSetError, chunk_path, load_samples, sample_latents
from stylenerf_edit.images import to_uint8
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.generator.checkpoint import load_with_info


@pytest.fixture(scope="module")
def bundled():
    return load_with_info("bundled:heads")


@pytest.fixture(scope="module")
def prior_dir(bundled, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 samples with prior cameras in chunks of 5 (5, 5, 2): shared, read-only for the tests."""
    G, info = bundled
    out = tmp_path_factory.mktemp("samples") / "prior"
    sample_latents(G, info, out, 12, seed=3, cameras="prior", chunk_size=5, progress=False)
    return out


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# --- sampling ---------------------------------------------------------------------------------------------------

def test_samples_do_not_depend_on_chunk_or_batch_size(bundled, prior_dir: Path, tmp_path: Path) -> None:
    G, info = bundled
    a = load_samples(prior_dir)
    b = sample_latents(G, info, tmp_path / "b", 12, seed=3, cameras="prior", chunk_size=3, batch_size=2,
                       progress=False)
    R = G.img_resolution
    assert len(a) == len(b) == 12 and a.images.shape == (12, R, R, 3) and a.images.dtype == np.uint8
    for name in ("z", "w", "cameras", "bg_code"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    # Batches of other sizes round differently: at most one grey level apart.
    diff = np.abs(a.images.astype(int) - b.images.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert len(list(prior_dir.glob("chunk_*.npz"))) == 3 and len(list((tmp_path / "b").glob("chunk_*.npz"))) == 4
    meta = json.loads((prior_dir / "meta.json").read_text())
    assert meta["format"] == "stylenerf-edit-samples" and meta["format_version"] == 1
    assert meta["generator"] == {"name": "bundled:heads", "weights_sha256": info.weights_sha256}
    assert (meta["n"], meta["seed"], meta["cameras"], meta["chunk_size"], meta["image_size"]) == (12, 3, "prior", 5, R)
    # w is the truncated mapping output the images were rendered from.
    with torch.no_grad():
        w = G.mapping(torch.from_numpy(a.z[:2]), truncation_psi=0.7)[:, 0].numpy()
    np.testing.assert_allclose(a.w[:2], w, atol=1e-5)
    assert not list(prior_dir.glob(".*"))   # no temporary files left behind


def test_prior_cameras_are_drawn_and_frontal_is_fixed(bundled, prior_dir: Path, tmp_path: Path) -> None:
    G, info = bundled
    prior = load_samples(prior_dir, images=False)
    assert prior.images is None and len(np.unique(prior.cameras[:, 0])) == 12 and np.ptp(prior.cameras[:, 1]) > 1
    frontal = sample_latents(G, info, tmp_path, 4, seed=3, cameras="frontal", progress=False)
    f = G.camera_prior.frontal()
    assert np.array_equal(frontal.cameras, np.tile([f.yaw, f.pitch, f.radius, f.fov], (4, 1)))
    assert frontal.camera(2) == f
    assert np.array_equal(frontal.z, prior.z[:4])   # the camera is drawn last: same latents either way


def test_resume_keeps_good_chunks_and_remakes_missing_and_truncated(bundled, tmp_path: Path) -> None:
    G, info = bundled
    first = sample_latents(G, info, tmp_path, 12, chunk_size=5, progress=False)
    kept = chunk_path(tmp_path, 0).stat().st_mtime_ns
    chunk_path(tmp_path, 1).unlink()
    broken = chunk_path(tmp_path, 2).read_bytes()
    chunk_path(tmp_path, 2).write_bytes(broken[:len(broken) // 2])
    with pytest.raises(SampleSetError) as e:
        load_samples(tmp_path)
    _one_line_error(e, "chunk_00001.npz", "missing")
    again = sample_latents(G, info, tmp_path, 12, chunk_size=5, progress=False)
    assert chunk_path(tmp_path, 0).stat().st_mtime_ns == kept
    for name in ("z", "w", "cameras", "bg_code", "images"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    # n may change: the samples depend on their index only.
    fewer = sample_latents(G, info, tmp_path, 7, chunk_size=5, progress=False)
    assert len(fewer) == 7 and np.array_equal(fewer.w, first.w[:7])


def test_other_settings_in_a_used_folder_are_refused(bundled, tmp_path: Path) -> None:
    G, info = bundled
    sample_latents(G, info, tmp_path, 3, progress=False)
    with pytest.raises(SampleSetError) as e:
        sample_latents(G, info, tmp_path, 3, seed=1, truncation_psi=0.5, progress=False)
    _one_line_error(e, str(tmp_path), "seed 0 (asked 1)", "truncation_psi", "new folder")
    with pytest.raises(SampleSetError) as e:
        sample_latents(G, info, tmp_path, 3, cameras="prior", progress=False)
    _one_line_error(e, "cameras")


def test_load_samples_validates(prior_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SampleSetError) as e:
        load_samples(tmp_path / "nowhere")
    _one_line_error(e, "nowhere", "meta.json")
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(SampleSetError) as e:
        load_samples(tmp_path)
    _one_line_error(e, "meta.json", "unreadable")
    meta = json.loads((prior_dir / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "seed": 4}))
    with pytest.raises(SampleSetError) as e:
        load_samples(tmp_path)
    _one_line_error(e, "edited")
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "format_version": 9}))
    with pytest.raises(SampleSetError) as e:
        load_samples(tmp_path)
    _one_line_error(e, "upgrade")
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    for k in range(3):
        chunk_path(tmp_path, k).write_bytes(chunk_path(prior_dir, k).read_bytes())
    assert len(load_samples(tmp_path)) == 12
    with np.load(chunk_path(prior_dir, 1)) as data:
        arrays = dict(data)
    np.savez(chunk_path(tmp_path, 1), **{**arrays, "w": arrays["w"][:, :10]})
    with pytest.raises(SampleSetError) as e:
        load_samples(tmp_path)
    _one_line_error(e, "chunk_00001.npz", "'w'")
    np.savez(chunk_path(tmp_path, 1), **{**arrays, "start": np.array(0)})   # chunk 0's file under chunk 1's name
    with pytest.raises(SampleSetError) as e:
        load_samples(tmp_path)
    _one_line_error(e, "chunk_00001.npz", "start at sample 5")


# --- labelers ---------------------------------------------------------------------------------------------------

def test_predictor_scores_are_in_range_and_match_the_cameras(prior_dir: Path) -> None:
    samples = load_samples(prior_dir)
    scores = PredictorLabeler()(samples.images, samples.indices)
    assert set(scores) == {"smile", "age", "glasses", "hair_color", "yaw", "pitch"}
    for name, v in scores.items():
        assert v.shape == (12,) and v.dtype == np.float64 and np.isfinite(v).all(), name
    assert (np.abs(scores["smile"]) <= 1).all() and ((scores["age"] >= 0) & (scores["age"] <= 1)).all()
    assert ((scores["glasses"] >= 0) & (scores["glasses"] <= 1)).all()
    assert np.abs(scores["yaw"] - samples.cameras[:, 0]).mean() < 4


def test_predictor_reads_the_yaw_of_renders_at_known_yaw(bundled) -> None:
    G, _ = bundled
    gen = torch.Generator().manual_seed(11)
    z, bg = G.sample_z(4, gen), G.sample_bg_code(4, gen)
    labeler = PredictorLabeler()
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=0.7)
        for yaw in (-20.0, 20.0):
            images = to_uint8(G.synthesize(ws, G.camera_prior.frontal().with_(yaw=yaw), bg).img)
            predicted = labeler(images)["yaw"]
            assert (np.sign(predicted) == np.sign(yaw)).all() and np.abs(predicted - yaw).max() < 6, predicted


def test_landmark_labeler_on_a_real_smiling_face(astronaut: np.ndarray) -> None:
    labeler = LandmarkLabeler()
    face = astronaut[30:230, 120:320]
    small = np.asarray(Image.fromarray(face).resize((96, 96), Image.Resampling.LANCZOS))   # upscaled inside
    scores = labeler(np.stack([astronaut, astronaut[:, ::-1]]))
    assert set(scores) == {"smile", "mouth_open", "yaw", "pitch"}
    assert all(np.isfinite(v).all() for v in scores.values())
    assert (np.abs(scores["yaw"]) < 10).all() and (np.abs(scores["pitch"]) < 8).all()
    assert abs(scores["yaw"][0] + scores["yaw"][1]) < 1.5          # mirroring turns the head the other way
    assert (scores["smile"] > 1).all() and (scores["mouth_open"] > 0.05).all()   # a broad, open smile
    tiny = labeler.score(small)
    assert abs(tiny["smile"] - scores["smile"][0]) < 0.6 and abs(tiny["yaw"] - scores["yaw"][0]) < 3
    flat = labeler(np.full((1, 64, 64, 3), 90, np.uint8))
    assert all(np.isnan(v).all() for v in flat.values())


def test_mouth_scores_follow_the_mouth_corners(astronaut: np.ndarray) -> None:
    from stylenerf_edit.invert.landmarks import detect_faces

    landmarks = detect_faces(astronaut)[0].landmarks
    base = mouth_scores(landmarks)
    d = np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0))
    centre = landmarks[48:68].mean(0)
    drooping = landmarks.copy()
    drooping[[48, 54]] = centre + 0.85 * (landmarks[[48, 54]] - centre) + [0, 0.1 * d]   # narrower, lower
    assert mouth_scores(drooping)["smile"] < base["smile"] - 1.5
    opened = landmarks.copy()
    opened[55:60] += [0, 0.2 * d]
    opened[65:68] += [0, 0.2 * d]
    assert mouth_scores(opened)["mouth_open"] > base["mouth_open"] + 0.15
    assert mouth_scores(opened)["smile"] == pytest.approx(base["smile"])   # opening the jaw is not smiling
    angle = math.radians(25)   # head roll does not change the scores
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    rolled = mouth_scores(landmarks @ rotation.T + 40)
    assert rolled == pytest.approx(base)


def test_file_labeler_csv(tmp_path: Path) -> None:
    images = np.zeros((4, 2, 2, 3), np.uint8)
    path = tmp_path / "my scores.csv"
    path.write_text("smile,age\n0.5,1\n-1,\n2,3\nNaN,4\n")
    labeler = FileLabeler(path)
    assert labeler.name == "file-my_scores" and labeler.attributes == ("smile", "age")
    scores = labeler(images)
    np.testing.assert_array_equal(scores["smile"], [0.5, -1, 2, np.nan])
    np.testing.assert_array_equal(scores["age"], [1, np.nan, 3, 4])
    assert FileLabeler(path, "age")(images[:2], np.array([2, 3]))["age"].tolist() == [3, 4]
    labeler.check_size(4)
    with pytest.raises(LabelerError) as e:
        labeler.check_size(5)
    _one_line_error(e, "4 rows", "5 samples")
    with pytest.raises(LabelerError) as e:
        FileLabeler(path, "glasses")
    _one_line_error(e, "'glasses'", "smile, age")
    indexed = tmp_path / "indexed.csv"
    indexed.write_text("index,smile\n7,0.25\n2,-0.5\n")
    picked = FileLabeler(indexed)(images[:3], np.array([2, 5, 7]))["smile"]
    np.testing.assert_array_equal(picked, [-0.5, np.nan, 0.25])   # sample 5 is not listed
    with pytest.raises(LabelerError) as e:
        FileLabeler(indexed).check_size(5)
    _one_line_error(e, "sample 7")
    for text, fragment in [("smile\n0.1\nhappy\n", "line 3"), ("smile,age\n1\n", "fields"), ("smile\n", "header"),
                           ("index,smile\n1,0\n1,2\n", "twice"), ("smile,smile\n1,2\n", "once")]:
        path.write_text(text)
        with pytest.raises(LabelerError) as e:
            FileLabeler(path)
        _one_line_error(e, fragment)
    path.write_bytes(b"\xff\xfe\x00garbage\x81")
    with pytest.raises(LabelerError) as e:
        FileLabeler(path)
    _one_line_error(e, "unreadable")
    with pytest.raises(LabelerError) as e:
        FileLabeler(tmp_path / "absent.csv")
    _one_line_error(e, "absent.csv")


def test_file_labeler_npy(tmp_path: Path) -> None:
    images = np.zeros((3, 2, 2, 3), np.uint8)
    np.save(tmp_path / "smile.npy", np.array([1.0, 2.0, 3.0], np.float32))
    one = FileLabeler(tmp_path / "smile.npy")
    assert one.attributes == ("smile",) and one(images)["smile"].dtype == np.float64
    np.save(tmp_path / "two.npy", np.arange(6).reshape(3, 2))
    two = FileLabeler(tmp_path / "two.npy", ["age", "glasses"])
    assert two(images)["glasses"].tolist() == [1, 3, 5]
    assert make_labeler(f"file:{tmp_path / 'two.npy'}@age,glasses").attributes == ("age", "glasses")
    with pytest.raises(LabelerError) as e:
        FileLabeler(tmp_path / "two.npy")
    _one_line_error(e, "2 score columns")
    with pytest.raises(LabelerError) as e:
        two.check_size(4)
    _one_line_error(e, "3 rows", "4 samples")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(LabelerError) as e:
        FileLabeler(tmp_path / "bad.npy")
    _one_line_error(e, "bad.npy", "unreadable")
    (tmp_path / "scores.txt").write_text("1\n")
    with pytest.raises(LabelerError) as e:
        FileLabeler(tmp_path / "scores.txt")
    _one_line_error(e, ".csv or .npy")


def test_clip_labeler_explains_how_to_install_it() -> None:
    try:
        import open_clip  # noqa: F401
        pytest.skip("open_clip is installed here")
    except ImportError:
        pass
    with pytest.raises(StyleNerfEditError) as e:
        ClipLabeler({"smile": ("a smiling face", "a neutral face")})
    _one_line_error(e, "pip install open_clip_torch")
    with pytest.raises(StyleNerfEditError) as e:
        make_labeler("clip:smile=a smiling face|a neutral face;glasses=a face with glasses|a face")
    _one_line_error(e, "open_clip")


def test_make_labeler_specs(tmp_path: Path) -> None:
    assert isinstance(make_labeler("predictor"), PredictorLabeler)
    assert isinstance(make_labeler("landmarks"), LandmarkLabeler)
    (tmp_path / "s@v.csv").write_text("smile\n1\n")
    assert make_labeler(f"file:{tmp_path / 's@v.csv'}").attributes == ("smile",)   # an existing path wins over @
    for spec, fragment in [("bogus", "unknown labeler"), ("landmarks:x", "unknown labeler"), ("file:", "unknown"),
                           ("clip:smile", "ATTR=POSITIVE"), ("clip:smile=a|b|c", "ATTR=POSITIVE"), ("clip:", "empty"),
                           ("clip:a=x|y;a=z|w", "twice"), ("predictor:" + str(tmp_path), str(tmp_path))]:
        with pytest.raises(StyleNerfEditError) as e:
            make_labeler(spec)
        _one_line_error(e, fragment)


class _MeanLabeler(Labeler):
    """Mean brightness per image, counting the images it saw."""

    name = "mean"
    attributes = ("brightness",)

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        self.seen += len(images)
        return {"brightness": images.reshape(len(images), -1).mean(1)}


def test_label_samples_stores_reloads_and_resumes(bundled, prior_dir: Path, tmp_path: Path) -> None:
    G, info = bundled
    sample_latents(G, info, tmp_path, 7, seed=3, cameras="prior", chunk_size=5, progress=False)
    labeler = _MeanLabeler()
    labels = label_samples(tmp_path, labeler, progress=False)
    assert labeler.seen == 7 and labels["brightness"].shape == (7,)
    with np.load(tmp_path / "labels_mean.npz") as data:
        assert np.array_equal(data["brightness"], labels["brightness"])
    assert np.array_equal(load_labels(tmp_path, "mean")["brightness"], labels["brightness"])
    label_samples(tmp_path, labeler, progress=False)
    assert labeler.seen == 7                                             # everything was stored
    part = tmp_path / "labels_mean.parts" / "chunk_00000.npz"
    part.write_bytes(part.read_bytes()[:40])                             # an interrupted write
    label_samples(tmp_path, labeler, progress=False)
    assert labeler.seen == 12                                            # only that chunk again
    sample_latents(G, info, tmp_path, 12, seed=3, cameras="prior", chunk_size=5, progress=False)
    with pytest.raises(LabelerError) as e:
        load_labels(tmp_path, "mean")
    _one_line_error(e, "label the samples again")
    grown = label_samples(tmp_path, labeler, progress=False)
    # The remade chunk re-renders samples 5-6 in another batch: up to one grey level apart (see sample_latents).
    assert labeler.seen == 12 + 7 and np.allclose(grown["brightness"][:7], labels["brightness"], atol=0.01)
    predicted = label_samples(prior_dir, PredictorLabeler(), progress=False)
    assert set(load_labels(prior_dir, "predictor")) == set(predicted) and np.isfinite(predicted["yaw"]).all()
    scores = tmp_path / "scores.csv"
    scores.write_text("index,smile\n" + "".join(f"{i},{i / 10}\n" for i in range(0, 12, 2)))
    from_file = label_samples(tmp_path, FileLabeler(scores), progress=False)
    assert np.allclose(from_file["smile"][::2], np.arange(0, 12, 2) / 10) and np.isnan(from_file["smile"][1::2]).all()
    scores.write_text("smile\n1\n2\n")
    with pytest.raises(LabelerError) as e:
        label_samples(tmp_path, FileLabeler(scores), progress=False)
    _one_line_error(e, "2 rows", "12 samples")
