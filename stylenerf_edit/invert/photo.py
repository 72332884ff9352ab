"""Photo loading: any file Pillow reads becomes an upright 8-bit RGB array, or a one-line :class:`PhotoError`.

Conventions, chosen for portraits that go on to face detection and inversion:

* the EXIF orientation tag is applied, so the array is what a photo viewer shows;
* transparency is composited onto white (a cut-out portrait then looks like a studio shot, instead of exposing
  whatever colour happens to be stored under the transparent pixels);
* high bit-depth data is scaled, never clipped: 16-bit values by ``255 / 65535``, floats in ``[0, 1]`` by 255,
  other ranges stretched min-to-max (see :func:`image_from_array`);
* embedded ICC profiles are ignored (values are taken as sRGB), and only the first frame of a multi-frame file is read;
* the image is returned at full resolution; detection downscales its own copy (see ``landmarks.detect_faces``) and
  alignment resamples from the full-resolution pixels.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stylenerf_edit.errors import PhotoError, one_line

__all__ = ["check_rgb", "image_from_array", "load_photo"]

# Modes whose numpy view keeps values that Pillow's own 8-bit conversion would clip.
_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"LA", "PA", "RGBA"}


def load_photo(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as an upright RGB array.

    Args:
        path: any format Pillow can decode (JPEG, PNG, TIFF, WebP, BMP, GIF, ...).
        max_pixels: refuse images with more pixels than this; ``None`` uses Pillow's decompression-bomb limit
            ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 megapixels).

    Returns:
        uint8 array [H, W, 3], RGB.

    Raises:
        PhotoError: the file is missing, a directory, empty, not an image, truncated, corrupt or too large.
    """
    path = Path(path)
    if not path.exists():
        raise PhotoError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise PhotoError(f"{path}: is a folder, not a photo; pass image files (e.g. {Path(path) / '*.jpg'}), or "
                         f"process the whole folder with `stylenerf-edit batch {path} --out results/`")
    if path.stat().st_size == 0:
        raise PhotoError(f"{path}: the file is empty; pass a JPEG or PNG photo")
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    downscale = "downscale it first (1024 px across the face is plenty)"
    try:
        with warnings.catch_warnings():
            # The pixel limit is enforced below with a clearer message than Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as e:
        raise PhotoError(f"{path}: too large to decode safely ({one_line(e)}); {downscale}") from None
    except UnidentifiedImageError:
        raise PhotoError(f"{path}: not an image file Pillow can read; save the photo as JPEG or PNG") from None
    except OSError as e:
        raise PhotoError(f"{path}: cannot read the file ({one_line(e)})") from None
    with image:
        width, height = image.size
        if limit and width * height > limit:
            raise PhotoError(f"{path}: {width}x{height} pixels exceed the limit of {limit}; {downscale}")
        try:
            image.load()
            rgb = _pil_to_array(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise PhotoError(f"{path}: the image data is truncated or corrupt ({one_line(e)}); re-export or "
                             "download the photo again") from None
    return image_from_array(rgb, name=str(path))


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Pixels as an array that :func:`image_from_array` understands, without losing high bit-depth precision."""
    if image.mode in _HIGH_DEPTH_MODES:
        return np.asarray(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return np.asarray(image.convert("RGBA"))
    # 1, L, P, CMYK, YCbCr, ...: Pillow's conversions are exact enough at 8 bits.
    return np.asarray(image.convert("RGB"))


def image_from_array(array: np.ndarray, *, name: str = "image array") -> np.ndarray:
    """Convert an image array of any common layout and dtype to uint8 RGB.

    Values are mapped to 8 bits by dtype: bool to {0, 255}; uint8 unchanged; uint16 divided by 257 (so 65535 maps
    to 255); other integers unchanged when within [0, 255], divided by 257 when within [0, 65535], else stretched
    min-to-max; floats multiplied by 255 when within [0, 1], unchanged when within [0, 255], else stretched.
    An alpha channel is composited onto white.

    Args:
        array: [H, W] grey, [H, W, 1] grey, [H, W, 2] grey + alpha, [H, W, 3] RGB or [H, W, 4] RGBA.
        name: what to call the array in error messages (the file it came from).

    Returns:
        uint8 array [H, W, 3].

    Raises:
        PhotoError: unsupported shape or dtype, no pixels, or non-finite values.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or array.size == 0:
        raise PhotoError(f"{name}: expected an image of shape [H, W] or [H, W, 1-4], got {list(array.shape)}")
    values = _to_8bit_range(array, name)
    if values.shape[2] in (2, 4):
        alpha = values[:, :, -1:] / 255.0
        values = values[:, :, :-1] * alpha + 255.0 * (1.0 - alpha)
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def check_rgb(image: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` is uint8 [H, W, 3], the layout detection and alignment work on."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {list(image.shape)}; "
                         "convert it with image_from_array")


def _to_8bit_range(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as float64 scaled to [0, 255] according to its dtype (rules in :func:`image_from_array`)."""
    kind, itemsize = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return array * 255.0
    if kind not in "uif":
        raise PhotoError(f"{name}: unsupported pixel type {array.dtype}; pass integer or float pixels")
    values = array.astype(np.float64)
    if kind == "u" and itemsize == 1:
        return values
    if kind == "u" and itemsize == 2:  # a dark 16-bit image stays dark, whatever its maximum
        return values / 257.0
    if not np.isfinite(values).all():
        raise PhotoError(f"{name}: the image contains NaN or infinite values; pass finite pixel values")
    lo, hi = values.min(), values.max()
    if kind == "f" and lo >= 0 and hi <= 1:
        return values * 255.0
    if lo >= 0 and hi <= 255:
        return values
    if kind != "f" and lo >= 0 and hi <= 65535:
        return values / 257.0
    return (values - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
