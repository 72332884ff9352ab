"""Face detection and 68-point landmarks (iBUG 300-W layout) for FFHQ alignment.

Backends:

``"dlib"`` (default, offline)
    dlib's HOG frontal-face detector, falling back to its MMOD CNN detector when HOG finds nothing, then dlib's
    68-point shape predictor. The model files come from the ``face-recognition-models`` package
    (``pip install dlib-bin face-recognition-models``); they are located on disk without importing that package,
    whose ``__init__`` needs ``pkg_resources``.
``"face-alignment"`` (optional)
    Bulat & Tzimiropoulos' FAN (``pip install face-alignment``) with its S3FD detector. More robust to pose and
    blur, but it downloads its networks on first use.

Licence caveat: dlib's ``shape_predictor_68_face_landmarks.dat`` is trained on the iBUG 300-W data set, whose
licence excludes commercial use; the same restriction is generally taken to apply to the trained model. Check it
before using the landmarks (and anything aligned with them) commercially.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stylenerf_edit.errors import FaceModelError, one_line
from stylenerf_edit.invert.photo import check_rgb

__all__ = ["BACKENDS", "Face", "detect_faces", "dlib_model_path"]

BACKENDS = ("dlib", "face-alignment")

_DLIB_INSTALL = "pip install dlib-bin face-recognition-models"
# dlib's CNN detector fails (and can corrupt its state) on images this narrow; no detector finds faces there.
_MIN_SIDE = 32


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: (left, top, right, bottom) in image pixels; right and bottom are exclusive, as in PIL boxes.
        score: the detector's confidence; scales differ between detectors, so compare scores of one detector only.
        landmarks: float64 [68, 2] (x, y) image pixel coordinates, pixel centres at integers, in the iBUG 300-W
            order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67).
        detector: which detector found the face (``"dlib-hog"``, ``"dlib-cnn"`` or ``"face-alignment"``).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    detector: str

    def __post_init__(self) -> None:
        landmarks = np.asarray(self.landmarks, dtype=np.float64)
        if landmarks.shape != (68, 2):
            raise ValueError(f"landmarks must have shape [68, 2], got {list(landmarks.shape)}")
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(right - left, 0.0) * max(bottom - top, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, for JSON or ``np.savez``."""
        return {"box": list(self.box), "score": self.score, "landmarks": self.landmarks.tolist(),
                "detector": self.detector}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Face:
        return cls(tuple(data["box"]), float(data["score"]), np.asarray(data["landmarks"]), str(data["detector"]))


def detect_faces(image: np.ndarray, backend: str = "dlib", *, upsample: int = 0, min_score: float = 0.0,
                 max_side: int = 1600, device: str = "cpu") -> list[Face]:
    """Find faces and their 68 landmarks.

    Args:
        image: uint8 [H, W, 3] RGB (see ``photo.load_photo``).
        backend: ``"dlib"`` or ``"face-alignment"`` (see the module docstring).
        upsample: dlib only: how many times the detectors double the image first. At 0 they find faces down to
            about 80 px; each doubling halves that, at four times the cost.
        min_score: drop detections scoring below this. For dlib's HOG detector real faces score about 0.5-2 and
            typical false positives below 0.
        max_side: detect on a copy downscaled to at most this many pixels on the long side (detection cost grows
            with area, the CNN fallback's steeply); boxes and landmarks are mapped back to ``image``, and dlib's
            landmarks are predicted on the full-resolution image.
        device: face-alignment only: the torch device its networks run on.

    Returns:
        The faces, largest box first (weak detections last, see :func:`order_faces`); empty when there is none.

    Raises:
        FaceModelError: the backend or its model files are not installed or cannot be loaded.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown face detector backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    check_rgb(image)
    image = np.ascontiguousarray(image)  # dlib reads the buffer directly
    small, scale = _downscale(image, max_side)
    if min(small.shape[:2]) < _MIN_SIDE:
        return []
    if backend == "dlib":
        faces = _detect_dlib(image, small, scale, upsample, min_score)
    else:
        faces = _detect_face_alignment(small, scale, min_score, device)
    return order_faces(faces)


# A detection this much less confident than the photo's best one is taken for a false positive first: dlib's HOG
# finds the astronaut's round mission patch (score 0.07, box larger than her face, 1.6) once the photo is a JPEG.
WEAK_FRACTION = 0.25


def order_faces(faces: list[Face]) -> list[Face]:
    """Largest box first among the confident detections (score at least ``WEAK_FRACTION`` of the best one's),
    then the weak ones, largest first. Scores are compared within one detector's results only."""
    best = max((f.score for f in faces), default=0.0)
    return sorted(faces, key=lambda f: (best > 0 and f.score < WEAK_FRACTION * best, -f.area))


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` shrunk (antialiased) to fit ``max_side``, and the per-axis (x, y) factor back to full size."""
    height, width = image.shape[:2]
    factor = max(height, width) / max_side
    if factor <= 1:
        return image, np.ones(2)
    size = (max(round(width / factor), 1), max(round(height / factor), 1))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return small, np.array([width / size[0], height / size[1]])


def dlib_model_path(name: str) -> Path:
    """Path of a model file shipped in the ``face-recognition-models`` package, found without importing it.

    Args:
        name: file name, e.g. ``"shape_predictor_68_face_landmarks.dat"`` or ``"mmod_human_face_detector.dat"``.

    Raises:
        FaceModelError: the package or the file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "models" / name
        if path.is_file():
            return path
    raise FaceModelError(f"dlib model file {name} not found; install it with: {_DLIB_INSTALL}")


def _dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise FaceModelError(f"face detection needs dlib; install it with: {_DLIB_INSTALL}") from None
    return dlib


@functools.lru_cache(maxsize=None)
def _hog_detector() -> Any:
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _dlib_model(kind: str, path: Path) -> Any:
    """``kind``: ``cnn_face_detection_model_v1`` (the MMOD face detector) or ``shape_predictor`` (landmarks)."""
    try:
        return getattr(_dlib(), kind)(str(path))
    except RuntimeError as e:
        what = "face detector" if kind.startswith("cnn") else "landmark model"
        raise FaceModelError(f"{path}: cannot load the dlib {what} ({one_line(e)}); reinstall it with: "
                             f"{_DLIB_INSTALL}") from None


def _detect_dlib(image: np.ndarray, small: np.ndarray, scale: np.ndarray, upsample: int,
                 min_score: float) -> list[Face]:
    dlib = _dlib()
    predictor = _dlib_model("shape_predictor", dlib_model_path("shape_predictor_68_face_landmarks.dat"))
    rects, scores, _ = _hog_detector().run(small, upsample, min_score)
    found = [(rect, score, "dlib-hog") for rect, score in zip(rects, scores)]
    if not found:
        # HOG misses rotated, dark and partly occluded faces that the (much slower) CNN still finds.
        cnn = _dlib_model("cnn_face_detection_model_v1", dlib_model_path("mmod_human_face_detector.dat"))
        found = [(d.rect, d.confidence, "dlib-cnn") for d in cnn(small, upsample) if d.confidence >= min_score]
    faces = []
    for rect, score, detector in found:
        box = np.array([rect.left(), rect.top(), rect.left() + rect.width(), rect.top() + rect.height()])
        box = box * np.tile(scale, 2)
        # Landmarks from the full-resolution pixels: the predictor's cost does not depend on the image size.
        full = dlib.rectangle(*(int(v) for v in np.rint(box - [0, 0, 1, 1])))
        shape = predictor(image, full)
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        faces.append(Face(tuple(box), float(score), landmarks, detector))
    return faces


@functools.lru_cache(maxsize=2)
def _face_alignment_model(device: str) -> Any:
    try:
        import face_alignment
    except ImportError:
        raise FaceModelError("the face-alignment backend is not installed: pip install face-alignment "
                             "(or use the default dlib backend)") from None
    try:
        return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device, flip_input=False)
    except Exception as e:  # download (URLError, HTTPError, ...) or load failure: any of them means "unusable"
        raise FaceModelError(f"face-alignment could not load its networks ({type(e).__name__}: {one_line(e)}); "
                             "it downloads them once on first use, so run it once with network access, or use "
                             "the default dlib backend offline") from None


def _detect_face_alignment(small: np.ndarray, scale: np.ndarray, min_score: float, device: str) -> list[Face]:
    landmarks, _, boxes = _face_alignment_model(device).get_landmarks_from_image(small, return_bboxes=True)
    if landmarks is None:  # no face
        return []
    faces = []
    for points, box in zip(landmarks, boxes):
        if box[4] >= min_score:
            # Pixel centres sit at integers, so scaling pivots on the pixel corner half a pixel away.
            full = (np.asarray(points, dtype=np.float64)[:, :2] + 0.5) * scale - 0.5
            faces.append(Face(tuple(np.asarray(box[:4]) * np.tile(scale, 2)), float(box[4]), full,
                              "face-alignment"))
    return faces
