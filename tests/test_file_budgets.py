"""Files read under a budget. Latents, directions, sample chunks and label files refuse a zip bomb, a huge shape
declared in an ``.npy`` header, object arrays, too many entries and too long a loss history in one line, quickly and
in little memory, before reading the data; legitimate files load exactly as numpy reads them. Training checkpoints
refuse pickled code without running it."""

from __future__ import annotations

import io
import json
import math
import shutil
import time
import tracemalloc
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from stylenerf_edit.directions.direction import Direction, DirectionError, load_direction, save_direction
from stylenerf_edit.directions.labelers import Labeler, LabelerError, label_samples, load_labels
from stylenerf_edit.directions.sample import SampleSetError, _key, chunk_path, load_samples, sample_latents
from stylenerf_edit.errors import CheckpointError
from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import load_with_info
from stylenerf_edit.invert.latent import (MAX_LOSS_ENTRIES, MAX_LOSS_STEPS, GeneratorRef, Latent, LatentError,
                                          load_latent, save_latent)
from stylenerf_edit.synthetic.distill import load_run_state

BOMB_BYTES = 64 << 20       # a bomb entry's uncompressed size: 64 MiB, about 64 KiB on disk
MEMORY_LIMIT = 8 << 20      # the most a refusal may allocate (Python and numpy, as tracemalloc counts them)
TIME_LIMIT = 5.0            # seconds for a refusal; reading the bombs themselves takes well under that
REF = GeneratorRef(name="tiny", weights_sha256="ab" * 32, num_ws=4, w_dim=8, img_resolution=32)


@dataclass
class Bomb:
    """An entry of zeros behind an ``.npy`` header that declares them truthfully, deflated about 1000:1."""

    descr: str
    shape: tuple[int, ...]


class _Payload:
    """Pickles as a call of ``open(marker, "w")``: unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (self.marker, "w")


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _write_npz(path: Path, entries: dict[str, np.ndarray | bytes | Bomb]) -> Path:
    """An ``.npz`` with every entry deflated; ``bytes`` entries are written as they are."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, value in entries.items():
            if isinstance(value, Bomb):
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    f.write(_header(value.descr, value.shape))
                    left = np.dtype(value.descr).itemsize * math.prod(value.shape)
                    zeros = bytes(1 << 20)
                    while left:
                        f.write(zeros[:min(left, len(zeros))])
                        left -= min(left, len(zeros))
            else:
                zf.writestr(f"{name}.npy", value if isinstance(value, bytes) else _npy(value))
    return path


def _entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return dict(data)


def _refused(load: Callable[[Path], Any], path: Path, error: type[Exception], *fragments: str) -> None:
    """``load(path)`` raises ``error`` in one line naming the file and ``fragments``, within the time and memory
    limits."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error) as e:
            load(path)
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"refusing {path.name} allocated {peak / 2**20:.0f} MiB"
    assert elapsed < TIME_LIMIT, f"refusing {path.name} took {elapsed:.1f} s"
    message = str(e.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


def _object_array(marker: Path) -> bytes:
    return _npy(np.array([_Payload(marker)], dtype=object))


def _many(count: int) -> dict[str, np.ndarray]:
    return {f"extra_{i}": np.zeros(1, np.float32) for i in range(count)}


# --- latents ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def latent_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    latent = Latent(ws=rng.standard_normal((REF.num_ws, REF.w_dim)), camera=Camera(yaw=10.0, pitch=-5.0, fov=12.0),
                    bg_code=rng.standard_normal(3), generator=REF, metrics={"psnr": 20.0},
                    loss_history={"total": np.linspace(1, 0, 300), "lpips": np.linspace(0.5, 0.1, 300)})
    path = save_latent(latent, tmp_path_factory.mktemp("latent") / "latent.npz")
    load_latent(path)   # imports and caches warmed before any memory is measured
    return path


def _latent_cases(marker: Path) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
    return {
        "bomb_in_loss": ({"loss_total": Bomb("<f4", (BOMB_BYTES // 4,))}, ("'loss_total'", "limit")),
        "bomb_in_ws": ({"ws": Bomb("<f4", (REF.num_ws, BOMB_BYTES // 4 // REF.num_ws))}, ("'ws'", "limit")),
        "huge_declared_shape": ({"ws": _header("<f4", (10**6, 10**6)) + bytes(16)}, ("'ws'", "[1000000, 1000000]")),
        "object_array": ({"ws": _object_array(marker)}, ("'ws'", "Python objects")),
        "too_many_entries": (_many(100), ("entries", "limit")),
        "too_long_loss": ({"loss_total": np.zeros(MAX_LOSS_STEPS + 1, np.float32)}, ("'loss_total'", "limit")),
        "too_many_losses": ({f"loss_{i}": np.zeros(2, np.float32) for i in range(MAX_LOSS_ENTRIES + 1)},
                            ("loss histories", "limit")),
    }


@pytest.mark.parametrize("case", list(_latent_cases(Path("-"))))
def test_hostile_latent_is_refused_in_one_line(latent_file: Path, tmp_path: Path, case: str) -> None:
    marker = tmp_path / "payload_ran"
    changes, fragments = _latent_cases(marker)[case]
    path = _write_npz(tmp_path / f"{case}.npz", {**_entries(latent_file), **changes})
    _refused(load_latent, path, LatentError, *fragments)
    assert not marker.exists()


def test_legit_latent_loads_as_numpy_reads_it(latent_file: Path, tmp_path: Path) -> None:
    raw = _entries(latent_file)
    # Re-packed by a user: deflated, ws in Fortran order. Still the same latent.
    repacked = tmp_path / "repacked.npz"
    np.savez_compressed(repacked, **{**raw, "ws": np.asfortranarray(raw["ws"])})
    for path in (latent_file, repacked):
        latent = load_latent(path)
        assert np.array_equal(latent.ws, raw["ws"]) and latent.ws.dtype == np.float32
        assert np.array_equal(latent.bg_code, raw["bg_code"])
        camera = latent.camera
        assert [camera.yaw, camera.pitch, camera.radius, camera.fov] == raw["camera"].tolist()
        assert set(latent.loss_history) == {"total", "lpips"}
        for name, history in latent.loss_history.items():
            assert np.array_equal(history, raw[f"loss_{name}"]) and history.dtype == np.float32
        assert latent.generator == REF and latent.metrics == {"psnr": 20.0}
        assert latent.ws.flags.writeable and latent.loss_history["total"].flags.writeable   # as np.load gives them


# --- directions ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def direction_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vector = np.random.default_rng(1).standard_normal(REF.w_dim)
    direction = Direction(attribute="smile", vector=vector / np.linalg.norm(vector), space="w", rows=None,
                          offset=0.25, center=np.ones(REF.w_dim), val_accuracy=0.9, generator=REF)
    path = save_direction(direction, tmp_path_factory.mktemp("direction") / "smile.npz")
    load_direction(path)
    return path


def _direction_cases(marker: Path) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
    return {
        "bomb_in_center": ({"center": Bomb("<f4", (BOMB_BYTES // 4,))}, ("'center'", "limit")),
        "bomb_in_vector": ({"vector": Bomb("<f8", (BOMB_BYTES // 8,))}, ("'vector'", "limit")),
        "huge_declared_shape": ({"vector": _header("<f4", (2**40,)) + bytes(32)}, ("'vector'", "limit")),
        "object_array": ({"vector": _object_array(marker)}, ("'vector'", "Python objects")),
        "too_many_entries": (_many(100), ("entries", "limit")),
    }


@pytest.mark.parametrize("case", list(_direction_cases(Path("-"))))
def test_hostile_direction_is_refused_in_one_line(direction_file: Path, tmp_path: Path, case: str) -> None:
    marker = tmp_path / "payload_ran"
    changes, fragments = _direction_cases(marker)[case]
    path = _write_npz(tmp_path / f"{case}.npz", {**_entries(direction_file), **changes})
    _refused(load_direction, path, DirectionError, *fragments)
    assert not marker.exists()


def test_legit_direction_loads_as_numpy_reads_it(direction_file: Path, tmp_path: Path) -> None:
    raw = _entries(direction_file)
    repacked = tmp_path / "repacked.npz"
    np.savez_compressed(repacked, **raw)
    for path in (direction_file, repacked):
        direction = load_direction(path)
        assert np.array_equal(direction.vector, raw["vector"]) and np.array_equal(direction.center, raw["center"])
        assert direction.offset == 0.25 and direction.val_accuracy == 0.9 and direction.generator == REF


# --- sample chunks and label files --------------------------------------------------------------------------------

class _Brightness(Labeler):
    name = "brightness"
    attributes = ("brightness",)

    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return {"brightness": images.reshape(len(images), -1).mean(1)}


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 samples at 8 x 8 in one chunk, labelled by brightness."""
    G, info = load_with_info("bundled:heads")
    out = tmp_path_factory.mktemp("samples") / "set"
    sample_latents(G, info, out, 3, seed=1, chunk_size=4, image_size=8, progress=False)
    label_samples(out, _Brightness(), progress=False)
    load_samples(out)
    load_labels(out, "brightness")
    return out


def _copy_with(sample_dir: Path, target: Path, name: str, changes: dict[str, Any]) -> Path:
    """The sample folder copied to ``target`` with entries of its file ``name`` changed."""
    shutil.copytree(sample_dir, target)
    _write_npz(target / name, {**_entries(sample_dir / name), **changes})
    return target


def _chunk_cases(marker: Path) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
    return {
        "bomb_in_images": ({"images": Bomb("|u1", (3, 2700, 2700, 3))}, ("limit",)),   # the file alone is over it
        "huge_declared_shape": ({"w": _header("<f4", (3, 10**12)) + bytes(64)}, ("'w'", "expected shape")),
        "object_array": ({"z": _object_array(marker)}, ("'z'", "Python objects")),
        "too_many_entries": (_many(100), ("entries", "limit")),
    }


@pytest.mark.parametrize("case", list(_chunk_cases(Path("-"))))
def test_hostile_sample_chunk_is_refused_in_one_line(sample_dir: Path, tmp_path: Path, case: str) -> None:
    marker = tmp_path / "payload_ran"
    changes, fragments = _chunk_cases(marker)[case]
    folder = _copy_with(sample_dir, tmp_path / "set", chunk_path(sample_dir, 0).name, changes)
    _refused(lambda _: load_samples(folder), chunk_path(folder, 0), SampleSetError, *fragments)
    assert not marker.exists()


def _label_cases(marker: Path) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
    return {
        "bomb_in_scores": ({"brightness": Bomb("<f8", (BOMB_BYTES // 8,))}, ("'brightness'", "limit")),
        "huge_declared_shape": ({"brightness": _header("<f8", (10**12,)) + bytes(24)}, ("'brightness'",)),
        "object_array": ({"meta": _object_array(marker)}, ("'meta'", "Python objects")),
        "too_many_entries": (_many(100), ("entries", "limit")),
    }


@pytest.mark.parametrize("case", list(_label_cases(Path("-"))))
def test_hostile_label_file_is_refused_in_one_line(sample_dir: Path, tmp_path: Path, case: str) -> None:
    marker = tmp_path / "payload_ran"
    changes, fragments = _label_cases(marker)[case]
    folder = _copy_with(sample_dir, tmp_path / "set", "labels_brightness.npz", changes)
    _refused(lambda _: load_labels(folder, "brightness"), folder / "labels_brightness.npz", LabelerError, *fragments)
    assert not marker.exists()


def test_legit_samples_and_labels_load_as_numpy_reads_them(sample_dir: Path, tmp_path: Path) -> None:
    raw = _entries(chunk_path(sample_dir, 0))
    labels = _entries(sample_dir / "labels_brightness.npz")
    folder = tmp_path / "set"
    shutil.copytree(sample_dir, folder)
    np.savez_compressed(chunk_path(folder, 0), **raw)
    for where in (sample_dir, folder):
        samples = load_samples(where)
        for name, found in (("z", samples.z), ("w", samples.w), ("camera", samples.cameras),
                            ("bg_code", samples.bg_code), ("images", samples.images)):
            assert np.array_equal(found, raw[name]) and found.dtype == raw[name].dtype, name
        assert np.array_equal(load_labels(where, "brightness")["brightness"], labels["brightness"])


@pytest.mark.parametrize("settings", [{"chunk_size": 4096, "image_size": 512},    # 3 GiB chunks
                                      {"chunk_size": 1, "n": 200_000}])           # 200,000 chunk files
def test_sample_settings_too_large_to_read_are_refused(sample_dir: Path, tmp_path: Path,
                                                       settings: dict[str, int]) -> None:
    folder = tmp_path / "set"
    shutil.copytree(sample_dir, folder)
    meta = {**json.loads((folder / "meta.json").read_text()), **settings}
    meta["key"] = _key(meta)   # the key guards against edits by mistake, not against a crafted folder
    (folder / "meta.json").write_text(json.dumps(meta))
    _refused(load_samples, folder, SampleSetError, "meta.json", "limit")
    G, info = load_with_info("bundled:heads")
    with pytest.raises(ValueError, match="limit"):
        sample_latents(G, info, tmp_path / "new", meta["n"], chunk_size=meta["chunk_size"],
                       image_size=meta["image_size"], progress=False)
    assert not (tmp_path / "new").exists()


# --- training checkpoints -----------------------------------------------------------------------------------------

def test_checkpoint_with_a_payload_is_refused_and_the_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"G": {"mapping.weight": torch.zeros(2, 2)}, "step": 3, "hook": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as e:
        load_run_state(path)
    message = str(e.value)
    assert "\n" not in message and "\x1b" not in message and str(path) in message and "open" in message, message
    assert not marker.exists()
    torch.load(path, weights_only=False)    # the payload is live: an unsafe load does run it
    assert marker.exists()


def test_legit_checkpoint_loads(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    weight = torch.nn.Parameter(torch.randn(3, 4, generator=gen))
    opt = torch.optim.Adam([weight], lr=1e-3, betas=(0.0, 0.99))
    weight.sum().backward()
    opt.step()
    probe = torch.nn.Linear(4, 2)
    state = {"G": {"mapping.weight": weight.detach().clone(), "synthesis.b": torch.ones(4, dtype=torch.float16)},
             "opt": opt.state_dict(), "rng": gen.get_state(), "step": 7, "samples": 56, "elapsed": 1.5,
             "train_config": {"seed": 0, "lr": 1e-3, "init": ""}, "param_names": ["mapping.weight"],
             "probe": probe.state_dict(), "history": [{"step": 7, "psnr": 20.5}], "init_weights_sha256": None,
             "sessions": [{"command": "distill --out run", "torch": str(torch.__version__)}]}
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    back = load_run_state(path)
    assert back.keys() == state.keys()
    assert all(torch.equal(back["G"][k], v) for k, v in state["G"].items())
    assert back["opt"]["param_groups"] == state["opt"]["param_groups"]
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    resumed = torch.Generator()
    resumed.set_state(back["rng"])
    assert torch.equal(torch.rand(5, generator=resumed), torch.rand(5, generator=gen))
    assert {k: back[k] for k in ("step", "samples", "elapsed", "train_config", "history", "sessions")} == \
        {k: state[k] for k in ("step", "samples", "elapsed", "train_config", "history", "sessions")}
