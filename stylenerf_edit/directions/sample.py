"""Generator samples for learning edit directions: latents, cameras and images in resumable chunks.

A sample folder, format ``stylenerf-edit-samples`` version 1:

    meta.json            format, format_version, tool_version, generator {name, weights_sha256}, n, seed,
                         truncation_psi, cameras ("frontal" or "prior"), chunk_size, image_size, z_dim, w_dim,
                         bg_code_dim, key (a digest of every setting but n)
    chunk_NNNNN.npz      samples ``NNNNN * chunk_size ..`` (the last chunk may hold fewer), ``allow_pickle=False``:
        z        float32 [c, z_dim]        the latent drawn for each sample
        w        float32 [c, w_dim]        its mapping output after truncation (every W+ row is equal)
        camera   float64 [c, 4]            yaw deg, pitch deg, radius, fov deg (``generator.camera.Camera``)
        bg_code  float32 [c, bg_code_dim]  background code
        images   uint8 [c, S, S, 3]        the render at ``image_size`` S
        start    int64 []                  index of the chunk's first sample
        key      unicode []                meta.json's key: a chunk copied from another folder is not reused

Sample ``i`` of a seed is drawn from its own RNG (seeded from ``seed`` and ``i``), so z, bg_code and camera are
bit-identical whatever ``n``, ``chunk_size`` or ``batch_size`` is, and w too (it is mapped one sample at a time).
Images are rendered in batches, and a batch's floating-point rounding depends on its size: the same sample
rendered in batches of different sizes may differ by one grey level in a few pixels.

Chunks are read under a budget (``files.NpzReader``): each entry's zip and ``.npy`` headers must declare exactly the
shape above before anything is decompressed. A folder whose settings would make chunks over ``MAX_CHUNK_BYTES``, or
more than ``MAX_CHUNKS`` chunks, is refused when sampling and when reading its meta.json.

Runs resume: complete chunks that load and validate are kept, missing or broken ones are made. Changing ``n``
is allowed (the samples depend only on their index): a larger ``n`` adds chunks, a smaller one ignores the
chunks past it (reused if ``n`` grows again); a chunk whose sample count changes is remade. Changing any other
setting in a used folder is an error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from stylenerf_edit import __version__
from stylenerf_edit.images import to_uint8
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import NpzError, NpzReader, save_npz, write_text
from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import GeneratorInfo
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.progress import Progress

FORMAT = "stylenerf-edit-samples"
FORMAT_VERSION = 1
META_NAME = "meta.json"
CAMERA_MODES = ("frontal", "prior")
MAX_IMAGE_SIZE = 256
MAX_CHUNK_BYTES = 1 << 30      # 1 GiB: 1300 samples at 256 x 256; the default chunk of 256 is 50 MiB
MAX_CHUNKS = 100_000
MAX_META_BYTES = 1 << 20
_CHUNK_SLACK = 1 << 16         # .npy headers, 'start' and 'key' on top of the arrays
# Settings that must match for two runs to write into the same folder (n may differ, see the module docstring).
_KEYED = ("format", "format_version", "weights_sha256", "seed", "truncation_psi", "cameras", "chunk_size",
          "image_size", "z_dim", "w_dim", "bg_code_dim")


class SampleSetError(StyleNerfEditError):
    """A sample folder is missing, malformed, or was made with other settings."""


@dataclass
class SampleSet:
    """Samples ``start .. start + len - 1`` of a sample folder (all of them from :func:`load_samples`)."""

    z: np.ndarray                   # [N, z_dim] float32
    w: np.ndarray                   # [N, w_dim] float32
    cameras: np.ndarray             # [N, 4] float64: yaw, pitch, radius, fov
    bg_code: np.ndarray             # [N, bg_code_dim] float32
    images: np.ndarray | None       # [N, S, S, 3] uint8, None when loaded without images
    meta: dict[str, Any]
    start: int = 0

    def __len__(self) -> int:
        return len(self.z)

    @property
    def indices(self) -> np.ndarray:
        """Sample indices [N] int64."""
        return np.arange(self.start, self.start + len(self), dtype=np.int64)

    def camera(self, i: int) -> Camera:
        """The camera of the ``i``-th sample of this set."""
        yaw, pitch, radius, fov = (float(v) for v in self.cameras[i])
        return Camera(yaw=yaw, pitch=pitch, radius=radius, fov=fov)


def _key(meta: dict[str, Any]) -> str:
    keyed = {k: meta["generator"]["weights_sha256"] if k == "weights_sha256" else meta[k] for k in _KEYED}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def chunk_path(directory: str | Path, chunk: int) -> Path:
    return Path(directory) / f"chunk_{chunk:05d}.npz"


def chunk_ranges(meta: dict[str, Any]) -> list[range]:
    """Sample indices of every chunk of a folder with this meta, in order."""
    n, size = meta["n"], meta["chunk_size"]
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def _chunk_bytes(meta: dict[str, Any]) -> int:
    """Bytes of the arrays of a full chunk of a folder with this meta."""
    per_sample = 3 * meta["image_size"] ** 2 + 4 * (meta["z_dim"] + meta["w_dim"] + meta["bg_code_dim"]) + 8 * 4
    return meta["chunk_size"] * per_sample


def _too_large(meta: dict[str, Any]) -> str | None:
    """Why a folder with these settings would be too large to read safely, or None."""
    if _chunk_bytes(meta) > MAX_CHUNK_BYTES:
        return (f"chunks of {_chunk_bytes(meta) >> 20} MiB, over the {MAX_CHUNK_BYTES >> 20} MiB limit; use a "
                "smaller chunk_size or image_size")
    chunks = -(-meta["n"] // meta["chunk_size"])
    if chunks > MAX_CHUNKS:
        return f"{chunks} chunks, over the limit of {MAX_CHUNKS}; use a larger chunk_size or fewer samples"
    return None


def read_meta(directory: str | Path) -> dict[str, Any]:
    """``meta.json`` of a sample folder, checked for format, version and the settings every chunk relies on."""
    path = Path(directory) / META_NAME
    if not path.is_file():
        raise SampleSetError(f"{directory}: not a sample folder (no {META_NAME}); make one with "
                             "stylenerf_edit.directions.sample.sample_latents")
    try:
        if path.stat().st_size > MAX_META_BYTES:
            raise SampleSetError(f"{path}: over the {MAX_META_BYTES >> 10} KiB limit for a sample folder's "
                                 "meta.json; delete the folder and sample again")
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise SampleSetError(f"{path}: unreadable ({type(e).__name__}); delete the folder and sample again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SampleSetError(f"{path}: not the meta.json of a stylenerf-edit sample folder (no format "
                             f"{FORMAT!r}); sample into another folder")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SampleSetError(f"{path}: sample format version {version!r} is newer than this tool understands "
                             f"({FORMAT_VERSION}); upgrade stylenerf-edit")
    ints = ("n", "seed", "chunk_size", "image_size", "z_dim", "w_dim", "bg_code_dim")
    bad = [k for k in ints if not isinstance(meta.get(k), int) or meta[k] < (0 if k == "seed" else 1)]
    bad += [] if meta.get("cameras") in CAMERA_MODES else ["cameras"]
    bad += [] if isinstance(meta.get("truncation_psi"), (int, float)) else ["truncation_psi"]
    bad += [] if isinstance(meta.get("generator"), dict) and "weights_sha256" in meta["generator"] else ["generator"]
    if bad:
        raise SampleSetError(f"{path}: missing or invalid settings ({', '.join(bad)}); delete the folder and "
                             "sample again")
    if meta.get("key") != _key(meta):
        raise SampleSetError(f"{path}: its settings were edited after sampling (key mismatch); restore them or "
                             "delete the folder and sample again")
    too_large = _too_large(meta)
    if too_large:
        raise SampleSetError(f"{path}: settings make {too_large}")
    return meta


def _new_meta(G: Generator, info: GeneratorInfo, n: int, seed: int, truncation_psi: float, cameras: str,
              chunk_size: int, image_size: int) -> dict[str, Any]:
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "tool_version": __version__,
            "generator": {"name": info.name, "weights_sha256": info.weights_sha256}, "n": n, "seed": seed,
            "truncation_psi": float(truncation_psi), "cameras": cameras, "chunk_size": chunk_size,
            "image_size": image_size, "z_dim": G.cfg.z_dim, "w_dim": G.cfg.w_dim, "bg_code_dim": G.cfg.bg_code_dim}
    meta["key"] = _key(meta)
    return meta


def _check_same_settings(directory: Path, wanted: dict[str, Any]) -> None:
    """Refuse to write into a folder whose existing meta.json has other settings (n aside)."""
    if not (directory / META_NAME).exists():
        return
    old = read_meta(directory)
    if old["key"] == wanted["key"]:
        return

    def value(m: dict[str, Any], k: str) -> Any:
        return m["generator"]["weights_sha256"][:12] if k == "weights_sha256" else m[k]

    diffs = [f"{k} {value(old, k)!r} (asked {value(wanted, k)!r})" for k in _KEYED if value(old, k) != value(wanted, k)]
    raise SampleSetError(f"{directory}: holds samples made with other settings: {'; '.join(diffs)}; pass the same "
                         "settings to resume, or sample into a new folder")


def _draw(G: Generator, seed: int, index: int, cameras: str) -> tuple[torch.Tensor, torch.Tensor, Camera]:
    """z [z_dim], background code [bg_code_dim] and camera of sample ``index``, from that sample's own RNG."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    z = G.sample_z(1, g)[0]
    bg = G.sample_bg_code(1, g)[0]
    camera = G.camera_prior.sample(1, g)[0] if cameras == "prior" else G.camera_prior.frontal()
    return z, bg, camera


@torch.no_grad()
def _make_chunk(G: Generator, meta: dict[str, Any], indices: range, batch_size: int,
                bar: Progress) -> dict[str, np.ndarray]:
    drawn = [_draw(G, meta["seed"], i, meta["cameras"]) for i in indices]
    z = torch.stack([d[0] for d in drawn])
    bg = torch.stack([d[1] for d in drawn])
    cams = [d[2] for d in drawn]
    # One sample at a time: w then does not depend on which other samples share a batch.
    w = torch.cat([G.mapping(z[i:i + 1], truncation_psi=meta["truncation_psi"])[:, 0] for i in range(len(z))])
    size = meta["image_size"]
    images = []
    for s in range(0, len(z), batch_size):
        ws = w[s:s + batch_size, None, :].expand(-1, G.num_ws, -1)
        img = G.synthesize(ws, cams[s:s + batch_size], bg[s:s + batch_size]).img
        if img.shape[-1] != size:
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        images.append(to_uint8(img))
        bar.update(len(img))
    return {"z": z.cpu().numpy().astype(np.float32), "w": w.cpu().numpy().astype(np.float32),
            "camera": np.array([[c.yaw, c.pitch, c.radius, c.fov] for c in cams], dtype=np.float64),
            "bg_code": bg.cpu().numpy().astype(np.float32), "images": np.concatenate(images),
            "start": np.array(indices.start, dtype=np.int64), "key": np.array(meta["key"])}


def _read_chunk(path: Path, meta: dict[str, Any], indices: range, images: bool) -> dict[str, np.ndarray]:
    """The chunk's arrays, checked for settings, start, shapes, dtypes and finiteness."""
    def bad(why: str) -> SampleSetError:
        return SampleSetError(f"{path}: {why}; re-run the sampling with the same settings to (re)make it")

    if not path.is_file():
        raise bad("missing")
    c, s = len(indices), meta["image_size"]
    expected = {"z": ((c, meta["z_dim"]), np.float32), "w": ((c, meta["w_dim"]), np.float32),
                "camera": ((c, 4), np.float64), "bg_code": ((c, meta["bg_code_dim"]), np.float32)}
    if images:
        expected["images"] = ((c, s, s, 3), np.uint8)
    try:
        with NpzReader(path, _chunk_bytes(meta) + _CHUNK_SLACK, max_members=16) as data:
            if "key" not in data or str(data.read("key", "U", ())) != meta["key"]:
                raise bad("made for another sample folder or other settings")
            if "start" not in data or int(data.read("start", "iu", ())) != indices.start:
                raise bad(f"does not start at sample {indices.start}")
            arrays = {}
            for name, (shape, dtype) in expected.items():
                if name not in data:
                    raise bad(f"has no '{name}' entry")
                value = data.read(name, np.dtype(dtype).kind, shape, finite=True)
                if value.dtype != dtype:
                    raise bad(f"'{name}' is {value.dtype} {list(value.shape)}, expected "
                              f"{np.dtype(dtype)} {list(shape)}")
                arrays[name] = value
    except NpzError as e:
        raise SampleSetError(f"{e}; re-run the sampling with the same settings to (re)make it") from None
    return arrays


def _is_complete(path: Path, meta: dict[str, Any], indices: range) -> bool:
    try:
        _read_chunk(path, meta, indices, images=True)
    except SampleSetError:
        return False
    return True


def sample_latents(G: Generator, info: GeneratorInfo, out_dir: str | Path, n: int, seed: int = 0,
                   truncation_psi: float = 0.7, cameras: Literal["frontal", "prior"] = "frontal",
                   chunk_size: int = 256, image_size: int | None = None, batch_size: int = 16,
                   progress: bool = True, load_images: bool = True) -> SampleSet:
    """Draw ``n`` samples of ``G`` into ``out_dir`` (see the module docstring), resuming a previous run.

    Args:
        G, info: the generator and its description (``generator.checkpoint.load_with_info``).
        n: number of samples; seed: sample ``i`` depends only on (seed, i).
        truncation_psi: truncation of w towards the average (1 = none).
        cameras: ``"frontal"`` renders every sample from the prior's mean camera, ``"prior"`` draws each
            sample's camera from the generator's pose prior.
        chunk_size: samples per chunk file, the unit of resuming.
        image_size: side of the stored images (default: the generator's resolution, at most 256).
        batch_size: samples rendered at once.
        load_images: whether the returned set holds the images (N * S * S * 3 bytes of memory).
    Returns:
        Every sample, as :func:`load_samples` reads them.
    """
    if n < 1 or chunk_size < 1 or batch_size < 1 or seed < 0:
        raise ValueError("need n >= 1, chunk_size >= 1, batch_size >= 1 and seed >= 0")
    if cameras not in CAMERA_MODES:
        raise ValueError(f"cameras must be one of {', '.join(CAMERA_MODES)}, got {cameras!r}")
    image_size = image_size or min(G.img_resolution, MAX_IMAGE_SIZE)
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    meta = _new_meta(G, info, n, seed, truncation_psi, cameras, chunk_size, image_size)
    too_large = _too_large(meta)
    if too_large:   # refused here, or reading the folder back would refuse it
        raise ValueError(f"these settings make {too_large}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_settings(out, meta)
    write_text(out / META_NAME, json.dumps(meta, indent=2) + "\n")
    ranges = chunk_ranges(meta)
    todo = [(k, r) for k, r in enumerate(ranges) if not _is_complete(chunk_path(out, k), meta, r)]
    with Progress(n, "sampling", "sample", enabled=progress) as bar:
        bar.set(n - sum(len(r) for _, r in todo))
        for k, r in todo:
            save_npz(chunk_path(out, k), _make_chunk(G, meta, r, batch_size, bar))
    return load_samples(out, images=load_images)


def load_chunk(directory: str | Path, chunk: int, meta: dict[str, Any] | None = None,
               images: bool = True) -> SampleSet:
    """Chunk ``chunk`` of a sample folder, validated against its meta.json."""
    meta = meta or read_meta(directory)
    ranges = chunk_ranges(meta)
    if not 0 <= chunk < len(ranges):
        raise IndexError(f"chunk {chunk} out of range: the folder has {len(ranges)} chunks")
    found = _read_chunk(chunk_path(directory, chunk), meta, ranges[chunk], images)
    return SampleSet(z=found["z"], w=found["w"], cameras=found["camera"],
                     bg_code=found["bg_code"], images=found.get("images"), meta=meta, start=ranges[chunk].start)


def load_samples(directory: str | Path, images: bool = True) -> SampleSet:
    """Every sample of a folder written by :func:`sample_latents`, validated (``images=False`` skips the images)."""
    meta = read_meta(directory)
    parts = [load_chunk(directory, k, meta, images) for k in range(len(chunk_ranges(meta)))]
    return SampleSet(z=np.concatenate([p.z for p in parts]), w=np.concatenate([p.w for p in parts]),
                     cameras=np.concatenate([p.cameras for p in parts]),
                     bg_code=np.concatenate([p.bg_code for p in parts]),
                     images=np.concatenate([p.images for p in parts]) if images else None, meta=meta)
