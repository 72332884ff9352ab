"""Latent files: an inverted (or edited) face as a versioned ``.npz`` that loads without pickle.

Schema, format ``stylenerf-edit-latent`` version 1 (every entry a plain numpy array, ``allow_pickle=False``):

    ws            float32 [num_ws, w_dim]   the W+ latent
    camera        float64 [4]               yaw deg, pitch deg, radius, fov deg (``generator.camera.Camera``)
    bg_code       float32 [bg_code_dim]     background code
    loss_<name>   float32 [steps]           per-step optimisation history (total, lpips, mse, ...), optional;
                                            at most ``MAX_LOSS_ENTRIES`` of them, ``MAX_LOSS_STEPS`` long
    meta          0-d unicode string        JSON: format, format_version, tool_version, generator
                                            {name, weights_sha256, num_ws, w_dim, img_resolution},
                                            alignment (``invert.align.Alignment.to_dict()`` or null),
                                            metrics {psnr, lpips, ...}, source (photo path), extra {}

``load_latent`` checks every entry's presence, dtype class, shape and finiteness, and (given the generator's
info) that the latent was made for the very same weights. It reads under a budget (``files.NpzReader``): a file
over ``MAX_LATENT_BYTES``, or an entry whose headers declare more, is refused before anything is decompressed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stylenerf_edit import __version__
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import NpzError, NpzReader, save_npz
from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import GeneratorInfo

FORMAT = "stylenerf-edit-latent"
FORMAT_VERSION = 1
MAX_LOSS_ENTRIES = 16
MAX_LOSS_STEPS = 100_000
# A latent itself is ~100 KB even for large generators; the rest of the budget is loss history.
MAX_LATENT_BYTES = 32 << 20
_MAX_MEMBERS = 32
_REMAKE = "re-create it with `stylenerf-edit invert`"


class LatentError(StyleNerfEditError):
    """A latent file is missing, malformed, or belongs to another generator."""


@dataclass
class GeneratorRef:
    """Which generator a latent belongs to."""

    name: str
    weights_sha256: str
    num_ws: int
    w_dim: int
    img_resolution: int

    @classmethod
    def from_info(cls, info: GeneratorInfo) -> "GeneratorRef":
        return cls(name=info.name, weights_sha256=info.weights_sha256, num_ws=info.config.num_ws,
                   w_dim=info.config.w_dim, img_resolution=info.config.img_resolution)


@dataclass
class Latent:
    """A face in a generator: W+ latent, camera and background code, with where it came from."""

    ws: np.ndarray                                  # [num_ws, w_dim] float32
    camera: Camera
    bg_code: np.ndarray                             # [bg_code_dim] float32
    generator: GeneratorRef
    alignment: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    loss_history: dict[str, np.ndarray] = field(default_factory=dict)   # name -> [steps]
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    tool_version: str = __version__

    def __post_init__(self) -> None:
        self.ws = np.asarray(self.ws, dtype=np.float32)
        self.bg_code = np.asarray(self.bg_code, dtype=np.float32)
        assert self.ws.shape == (self.generator.num_ws, self.generator.w_dim), \
            f"ws {self.ws.shape} does not match the generator's [{self.generator.num_ws}, {self.generator.w_dim}]"
        assert self.bg_code.ndim == 1, f"bg_code must be [bg_code_dim], got {self.bg_code.shape}"


def save_latent(latent: Latent, path: str | Path) -> Path:
    """Write ``latent`` to ``path`` (``.npz``) atomically: an interrupted save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "tool_version": latent.tool_version,
            "generator": vars(latent.generator), "alignment": latent.alignment,
            "metrics": {k: float(v) for k, v in latent.metrics.items()}, "source": latent.source,
            "extra": latent.extra}
    c = latent.camera
    arrays = {"ws": latent.ws, "camera": np.array([c.yaw, c.pitch, c.radius, c.fov], dtype=np.float64),
              "bg_code": latent.bg_code, "meta": np.array(json.dumps(meta))}
    arrays.update({f"loss_{k}": np.asarray(v, dtype=np.float32) for k, v in latent.loss_history.items()})
    return save_npz(path, arrays)


def _generator_ref(meta: dict[str, Any], path: Path) -> GeneratorRef:
    try:
        return GeneratorRef(**meta["generator"])
    except (KeyError, TypeError):
        raise LatentError(f"{path}: 'meta' lacks a valid generator record; {_REMAKE}") from None


def load_latent(path: str | Path, generator: GeneratorInfo | None = None) -> Latent:
    """Read and validate a latent file; with ``generator``, also require that it was made for those weights."""
    path = Path(path)
    if not path.is_file():
        raise LatentError(f"{path}: no such latent file; make one with `stylenerf-edit invert PHOTO`")
    try:
        with NpzReader(path, MAX_LATENT_BYTES, _MAX_MEMBERS) as data:
            meta = data.read_meta(FORMAT, FORMAT_VERSION, "latent")
            ref = _generator_ref(meta, path)
            ws = data.read("ws", "f", (None, None), finite=True)
            camera = data.read("camera", "f", (None,), finite=True)
            bg_code = data.read("bg_code", "f", (None,), finite=True)
            losses = [k for k in data.names if k.startswith("loss_")]
            if len(losses) > MAX_LOSS_ENTRIES:
                raise LatentError(f"{path}: {len(losses)} loss histories, over the limit of {MAX_LOSS_ENTRIES}; "
                                  f"{_REMAKE}")
            history = {k[len("loss_"):]: data.read(k, "f", (None,), max_items=MAX_LOSS_STEPS) for k in losses}
    except NpzError as e:
        raise LatentError(f"{e}; {_REMAKE}") from None
    if ws.shape != (ref.num_ws, ref.w_dim):
        raise LatentError(f"{path}: ws has shape {ws.shape}, its generator record says [{ref.num_ws}, {ref.w_dim}]")
    if camera.shape != (4,) or not (camera[2] > 0 and 0 < camera[3] < 180):
        raise LatentError(f"{path}: camera must be [yaw, pitch, radius > 0, 0 < fov < 180], got {camera.tolist()}")
    if generator is not None:
        expected = GeneratorRef.from_info(generator)
        if (ref.num_ws, ref.w_dim) != (expected.num_ws, expected.w_dim):
            raise LatentError(f"{path}: made for '{ref.name}' ([{ref.num_ws}, {ref.w_dim}] ws), which does not fit "
                              f"'{expected.name}' ([{expected.num_ws}, {expected.w_dim}]); pass --network {ref.name}")
        if ref.weights_sha256 != expected.weights_sha256:
            raise LatentError(f"{path}: made for '{ref.name}' (weights {ref.weights_sha256[:12]}), not for "
                              f"'{expected.name}' (weights {expected.weights_sha256[:12]}); pass the network it "
                              "was inverted with, or re-invert the photo")
        if generator.config.bg_code_dim != bg_code.shape[0]:
            raise LatentError(f"{path}: background code has {bg_code.shape[0]} values, '{expected.name}' expects "
                              f"{generator.config.bg_code_dim}")
    yaw, pitch, radius, fov = (float(v) for v in camera)
    metrics = {k: float(v) for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and math.isfinite(v)}
    return Latent(ws=ws, camera=Camera(yaw=yaw, pitch=pitch, radius=radius, fov=fov), bg_code=bg_code,
                  generator=ref, alignment=meta.get("alignment"), metrics=metrics, loss_history=history,
                  source=str(meta.get("source", "")), extra=meta.get("extra") or {},
                  tool_version=str(meta.get("tool_version", "")))
