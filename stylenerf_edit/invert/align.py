"""FFHQ face alignment, its inverse, and pasting an edited aligned face back into the photo.

The crop follows the recipe that produced the FFHQ data set (``recreate_aligned_images`` in NVlabs' ffhq-dataset):
an oriented square from the eye centres and mouth corners, an integer pre-shrink for large faces, a crop with a
border, reflection padding blurred and faded towards the median colour where the square leaves the photo, and a
supersampled quad warp downscaled with antialiasing. A StyleNeRF trained on FFHQ expects exactly this framing.

Coordinates are pixel coordinates with pixel centres at integers (dlib's and OpenCV's convention): the aligned
image's pixel (0, 0) is centred at (0, 0), its outer edge is at -0.5 and ``size - 0.5``. The square's corners
(:attr:`Alignment.quad`) are the aligned image's outer corners, expressed in the original photo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage
from PIL import Image, ImageDraw

from stylenerf_edit.errors import NoFaceError, PhotoError
from stylenerf_edit.invert.landmarks import Face, detect_faces
from stylenerf_edit.invert.photo import check_rgb, image_from_array, load_photo

__all__ = ["AlignedFace", "Alignment", "align_face", "align_photo", "aligned_input", "face_mask", "ffhq_quad",
           "paste_back"]

# An "already aligned" input may be this much off square (relative to its long side); it is centre-cropped.
_SQUARE_TOLERANCE = 0.02


@dataclass(frozen=True, eq=False)
class Alignment:
    """Where an aligned square crop lies in its source photo.

    Attributes:
        quad: float64 [4, 2] (x, y) source-photo coordinates of the aligned image's top-left, bottom-left,
            bottom-right and top-right outer corners (the FFHQ recipe's order).
        source_size: (H, W) of the source photo.
        output_size: side S of the aligned image.
    """

    quad: np.ndarray
    source_size: tuple[int, int]
    output_size: int

    def __post_init__(self) -> None:
        quad = np.asarray(self.quad, dtype=np.float64)
        if quad.shape != (4, 2):
            raise ValueError(f"quad must have shape [4, 2], got {list(quad.shape)}")
        object.__setattr__(self, "quad", quad)
        object.__setattr__(self, "source_size", (int(self.source_size[0]), int(self.source_size[1])))
        object.__setattr__(self, "output_size", int(self.output_size))

    @property
    def matrix(self) -> np.ndarray:
        """float64 [3, 3] homography taking homogeneous aligned pixel coordinates to source pixel coordinates.

        For the squares and rectangles this module produces it is affine (last row ``[0, 0, 1]``).
        """
        edge = self.output_size - 0.5
        corners = np.array([[-0.5, -0.5], [-0.5, edge], [edge, edge], [edge, -0.5]])
        return _homography(corners, self.quad)

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Map aligned-image points [..., 2] (x, y) to source-photo points [..., 2]."""
        return _apply(self.matrix, points)

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Map source-photo points [..., 2] (x, y) to aligned-image points [..., 2]."""
        return _apply(np.linalg.inv(self.matrix), points)

    def resized(self, size: int) -> Alignment:
        """The same crop rendered at ``size`` pixels (e.g. a low-resolution reconstruction of the face)."""
        return Alignment(self.quad, self.source_size, size)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, for JSON or ``np.savez``."""
        return {"quad": self.quad.tolist(), "source_size": list(self.source_size), "output_size": self.output_size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alignment:
        return cls(np.asarray(data["quad"]), tuple(data["source_size"]), int(data["output_size"]))


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned crop and how to get back to the photo.

    Attributes:
        image: uint8 [S, S, 3] RGB.
        alignment: the crop's placement in the source photo.
        face: the detection it was aligned from; ``None`` for inputs that were aligned already.
        landmarks: float64 [68, 2] the face's landmarks in aligned pixel coordinates; ``None`` without ``face``.
    """

    image: np.ndarray
    alignment: Alignment
    face: Face | None
    landmarks: np.ndarray | None


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square for 68 iBUG landmarks.

    The square is centred a tenth of the way from the eyes' midpoint to the mouth's, tilted to the eye line
    averaged with the perpendicular of the eye-mouth line, and sized from whichever of the eye distance and the
    eye-mouth distance dominates (2x and 1.8x half-sides).

    Args:
        landmarks: [68, 2] (x, y) pixel coordinates.

    Returns:
        float64 [4, 2]: top-left, bottom-left, bottom-right, top-right corners.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must have shape [68, 2], got {list(lm.shape)}")
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (lm[48] + lm[54]) / 2 - eye_avg
    # x: eye line combined with the eye-mouth line turned by -90 degrees, so both tilts count.
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = np.hypot(*x)
    if norm < 1e-6:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / norm
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def align_face(image: np.ndarray, face: Face, size: int, *, transform_size: int | None = None,
               enable_padding: bool = True) -> AlignedFace:
    """Crop and rotate one face into the FFHQ framing.

    Args:
        image: uint8 [H, W, 3] RGB, the full-resolution photo the face was detected in.
        face: a detection from :func:`~stylenerf_edit.invert.landmarks.detect_faces` on ``image``.
        size: side S of the aligned image.
        transform_size: side of the supersampled warp that is then downscaled to ``size``; default ``4 * size``,
            the recipe's 4096 for 1024.
        enable_padding: fill the parts of the square outside the photo with blurred reflections (the recipe);
            otherwise they stay black.

    Returns:
        The aligned face, with image uint8 [S, S, 3].
    """
    check_rgb(image)
    alignment = Alignment(ffhq_quad(face.landmarks), image.shape[:2], size)
    crop = _warp_quad(image, alignment.quad, size, transform_size or 4 * size, enable_padding)
    return AlignedFace(crop, alignment, face, alignment.to_aligned(face.landmarks))


def align_photo(path: str | os.PathLike, size: int, *, face_index: int = 0, backend: str = "dlib") -> AlignedFace:
    """Load a photo, detect its faces and FFHQ-align one of them.

    Args:
        path: the photo (see :func:`~stylenerf_edit.invert.photo.load_photo`).
        size: side S of the aligned image.
        face_index: which face, counting from the largest (0).
        backend: face detector, see :func:`~stylenerf_edit.invert.landmarks.detect_faces`.

    Raises:
        PhotoError: the photo cannot be read.
        NoFaceError: no face was found, or fewer than ``face_index + 1``.
    """
    image = load_photo(path)
    faces = detect_faces(image, backend)
    if not faces:
        raise NoFaceError(f"{path}: no face found; use --aligned for an already aligned crop, or a sharper or "
                          "larger photo with a frontal face")
    if not 0 <= face_index < len(faces):
        raise NoFaceError(f"{path}: face index {face_index} requested but {len(faces)} face(s) found; choose an "
                          f"index from 0 to {len(faces) - 1}")
    return align_face(image, faces[face_index], size)


def aligned_input(path: str | os.PathLike, size: int) -> AlignedFace:
    """Load a photo that is already an aligned square face crop (e.g. from ``stylenerf-edit synth``).

    Nothing is detected: the image is centre-cropped to a square (it may be off by 2 %) and resized to ``size``
    with antialiasing; the alignment's quad is that square.

    Raises:
        PhotoError: the photo cannot be read or is clearly not square.
    """
    image = load_photo(path)
    height, width = image.shape[:2]
    if abs(height - width) > _SQUARE_TOLERANCE * max(height, width):
        raise PhotoError(f"{path}: {width}x{height} is not square, so it is not an aligned face crop; pass it "
                         "without --aligned to detect and align the face")
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    crop = image[top:top + side, left:left + side]
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))
    quad = np.array([[left, top], [left, top + side], [left + side, top + side], [left + side, top]]) - 0.5
    return AlignedFace(crop, Alignment(quad, (height, width), size), None, None)


def draw_alignment(image: np.ndarray, face: AlignedFace, max_side: int = 512) -> np.ndarray:
    """The photo with the aligned crop's square (yellow, its top edge thicker) and the detected face's box and
    landmarks (cyan) drawn on it, scaled down to at most ``max_side`` pixels: what the alignment did, at a glance.

    Args:
        image: uint8 [H, W, 3] the photo ``face`` was aligned from.
    Returns:
        uint8 [h, w, 3].
    """
    check_rgb(image)
    scale = min(1.0, max_side / max(image.shape[:2]))
    canvas = Image.fromarray(image)
    if scale < 1:
        canvas = canvas.resize((max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                               Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 200))
    quad = (face.alignment.quad + 0.5) * scale
    draw.polygon([tuple(p) for p in quad], outline=(255, 220, 0), width=width)
    draw.line([tuple(quad[3]), tuple(quad[0])], fill=(255, 220, 0), width=2 * width)   # the crop's top
    if face.face is not None:
        box = np.asarray(face.face.box, dtype=np.float64) * scale
        draw.rectangle([float(v) for v in box], outline=(0, 220, 255), width=width)
        r = max(1.0, 0.6 * width)
        for x, y in (face.face.landmarks + 0.5) * scale:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 220, 255))
    return np.asarray(canvas)


def face_mask(landmarks: np.ndarray, size: int, *, forehead: float = 0.45, grow: float = 0.06,
              feather: float = 0.06) -> np.ndarray:
    """A soft mask of the face region in aligned space, from its 68 landmarks.

    The region is the convex hull of the landmarks with the eyebrows raised by ``forehead`` of the brow-to-chin
    distance (the landmarks stop at the brows; the generator also redraws the forehead), grown by ``grow`` of the
    face's size around its centre and blurred over ``feather`` of it, so that a pasted face fades into the photo
    instead of leaving the crop's square.

    Args:
        landmarks: float [68, 2] (x, y) in the aligned image's pixels (:attr:`AlignedFace.landmarks`) of an
            image of side ``alignment.output_size``; scale them for another ``size`` first.
        size: side of the mask.

    Returns:
        float32 [size, size] in [0, 1].
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must have shape [68, 2], got {list(lm.shape)}")
    brows, chin = lm[17:27], lm[8]
    up = brows.mean(axis=0) - chin
    height = float(np.hypot(*up))
    if height <= 0:
        raise ValueError("degenerate landmarks: brows and chin coincide")
    points = np.concatenate([lm, brows + forehead * up])
    centre = points.mean(axis=0)
    points = centre + (points - centre) * (1 + grow)
    hull = _convex_hull(points)
    canvas = Image.new("F", (size, size), 0.0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull], fill=1.0)
    mask = np.asarray(canvas, dtype=np.float32)
    return np.clip(scipy.ndimage.gaussian_filter(mask, sigma=max(feather * height, 0.5)), 0, 1).astype(np.float32)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain: the hull's vertices [K, 2], counter-clockwise."""
    pts = sorted(map(tuple, points))

    def half(seq: list) -> list:
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def paste_back(original: np.ndarray, aligned_image: np.ndarray, alignment: Alignment, *,
               feather: float = 0.1, landmarks: np.ndarray | None = None) -> np.ndarray:
    """Warp an aligned-space image back into the photo it was cropped from.

    Args:
        original: uint8 [H, W, 3] the source photo (``alignment.source_size``).
        aligned_image: [s, s, 3] any square size s, uint8 or float in [0, 1] (e.g. an edited reconstruction).
        alignment: the crop's alignment.
        feather: width of the blend ramp at the crop's edges, as a fraction of its side; 0 pastes a hard square.
        landmarks: the face's landmarks in aligned pixels (:attr:`AlignedFace.landmarks`): only the face region
            (:func:`face_mask`) is blended in, not the whole square. ``None`` pastes the square.

    Returns:
        uint8 [H, W, 3]: ``original`` with the crop (or its face) blended in.
    """
    check_rgb(original)
    if tuple(original.shape[:2]) != alignment.source_size:
        raise ValueError(f"photo is {original.shape[:2]}, the alignment was made for {alignment.source_size}")
    crop = image_from_array(aligned_image, name="aligned image")
    if crop.shape[0] != crop.shape[1]:
        raise ValueError(f"aligned image must be square, got {list(crop.shape[:2])}")
    # Bilinear warping aliases when it shrinks, so shrink with antialiasing first to about the photo's scale.
    side = max(int(np.ceil(np.hypot(*(alignment.quad[3] - alignment.quad[0])))), 1)
    if crop.shape[0] > side:
        crop = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.LANCZOS))
    s = crop.shape[0]
    height, width = alignment.source_size
    left, top = np.maximum(np.floor(alignment.quad.min(axis=0)).astype(int), 0)
    right, bottom = np.minimum(np.ceil(alignment.quad.max(axis=0)).astype(int) + 1, [width, height])
    result = original.copy()
    if right <= left or bottom <= top:
        return result
    # PIL maps output pixel corners to input pixel corners (pixel centres at +0.5): shift the centre-based matrix.
    to_aligned = np.linalg.inv(alignment.resized(s).matrix)
    data = _shift(0.5) @ to_aligned @ _shift(-0.5) @ _shift([left, top])
    data = (data / data[2, 2]).ravel()[:8]
    region = (int(right - left), int(bottom - top))
    warped = np.asarray(Image.fromarray(crop).transform(region, Image.Transform.PERSPECTIVE, data,
                                                        Image.Resampling.BILINEAR), dtype=np.float64)
    blend = _feather_mask(s, feather)
    if landmarks is not None:
        scale = s / alignment.output_size      # landmarks in pixel centres: scale about the -0.5 edge
        blend = blend * face_mask((np.asarray(landmarks, dtype=np.float64) + 0.5) * scale - 0.5, s)
    mask = Image.fromarray(blend).transform(region, Image.Transform.PERSPECTIVE, data, Image.Resampling.BILINEAR)
    mask = np.asarray(mask, dtype=np.float64)[:, :, None]
    patch = result[top:bottom, left:right].astype(np.float64)
    result[top:bottom, left:right] = np.clip(np.rint(patch + (warped - patch) * mask), 0, 255).astype(np.uint8)
    return result


def _feather_mask(size: int, feather: float) -> np.ndarray:
    """float32 [size, size]: 1 inside, falling linearly to 0 at the edges over ``feather * size`` pixels."""
    if feather <= 0:
        return np.ones((size, size), dtype=np.float32)
    centres = np.arange(size) + 0.5
    edge = np.minimum(centres, size - centres) / (feather * size)
    return np.clip(np.minimum(edge[:, None], edge[None, :]), 0, 1).astype(np.float32)


def _warp_quad(image: np.ndarray, quad: np.ndarray, size: int, transform_size: int,
               enable_padding: bool) -> np.ndarray:
    """The FFHQ recipe's shrink, crop, pad and quad warp; returns uint8 [size, size, 3]."""
    img = Image.fromarray(image)
    quad = quad.copy()
    qsize = np.hypot(*(quad[3] - quad[0]))

    # Shrink: a face far larger than the output is first downscaled by an integer factor.
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink)))
        factor = np.array(rsize) / img.size
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        # Exact per-axis mapping about pixel corners (the recipe's quad /= shrink is off by up to half a pixel).
        quad = (quad + 0.5) * factor - 0.5
        qsize *= factor.mean()

    # Crop to the square plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.width),
            min(hi[1] + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad -= crop[:2]

    # Pad where the square (plus border) leaves the photo: reflect, then blur and fade towards the median colour
    # with distance from the photo, so that the padding reads as out-of-focus background.
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = np.array([max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.width + border, 0),
                    max(hi[1] - img.height + border, 0)])
    if enable_padding and pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                          1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
        blur = qsize * 0.02
        arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]

    # PIL's quad corners are pixel-corner coordinates: the centre-based quad shifts by half a pixel.
    img = img.transform((transform_size, transform_size), Image.Transform.QUAD, (quad + 0.5).flatten(),
                        Image.Resampling.BILINEAR)
    if size < transform_size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img)


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[3, 3] projective map taking the four points ``src`` [4, 2] to ``dst`` [4, 2], normalised to H[2, 2] = 1."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows), np.array(rhs)), 1.0).reshape(3, 3)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    mapped = points @ matrix[:2, :2].T + matrix[:2, 2]
    return mapped / (points @ matrix[2, :2] + matrix[2, 2])[..., None]


def _shift(offset: float | list[float]) -> np.ndarray:
    """[3, 3] translation by ``offset`` (scalar: the same on both axes)."""
    matrix = np.eye(3)
    matrix[:2, 2] = offset
    return matrix
