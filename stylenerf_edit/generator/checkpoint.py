"""Loading and saving generators: official pickles, the native safetensors format, and model names.

Native format (diffusers style): a directory with ``config.json`` (the :class:`GeneratorConfig` plus
provenance) and ``model.safetensors`` (official parameter names, float32). :func:`load_generator`
accepts an official ``.pkl``, such a directory, its ``.safetensors`` file, or a model name.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from stylenerf_edit import __version__
from stylenerf_edit.errors import CheckpointError, one_line
from stylenerf_edit.files import atomic_path, sha256_file, write_text

from .camera import CameraPrior
from .download import MODELS, find_downloaded, models_dir
from .network import Generator, GeneratorConfig
from .official_pickle import is_official_pickle, read_official_pickle

__all__ = [
    "GeneratorInfo", "config_from_official", "generator_from_official", "load_generator", "save_pretrained",
    "weights_sha256", "describe", "resolve_device",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_NAME = "stylenerf-edit-generator"
FORMAT_VERSION = 1
DESIGN_RESAMPLE_FILTER = torch.outer(torch.tensor([1.0, 3.0, 3.0, 1.0]), torch.tensor([1.0, 3.0, 3.0, 1.0])) / 64

# Official options this implementation reproduces: (kwargs path, required value, class default).
_REQUIRED_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("c_dim", 0, 0),
    ("synthesis_kwargs.upsample_mode", "nn_cat", "default"),
    ("synthesis_kwargs.architecture", "skip", "skip"),
    ("synthesis_kwargs.use_noise", False, True),
    ("synthesis_kwargs.z_dim", 0, 0),
    ("synthesis_kwargs.camera_kwargs.angular_camera", True, False),
    ("synthesis_kwargs.camera_kwargs.depth_transform", None, None),
    ("synthesis_kwargs.camera_kwargs.dists_normalized", False, False),
    ("synthesis_kwargs.camera_kwargs.ray_align_corner", False, True),
    ("synthesis_kwargs.camera_kwargs.random_rotate", False, False),
    ("synthesis_kwargs.renderer_kwargs.hierarchical", True, True),
    ("synthesis_kwargs.renderer_kwargs.no_background", False, False),
    ("synthesis_kwargs.foreground_kwargs.positional_encoding", "normal", "normal"),
    ("synthesis_kwargs.foreground_kwargs.use_viewdirs", False, False),
    ("synthesis_kwargs.foreground_kwargs.predict_rgb", True, False),
    ("synthesis_kwargs.foreground_kwargs.downscale_p_by", 1, 1),
    ("synthesis_kwargs.foreground_kwargs.use_pos", False, False),
    ("synthesis_kwargs.background_kwargs.positional_encoding", "normal", "normal"),
    ("synthesis_kwargs.background_kwargs.inverse_sphere", True, False),
    ("synthesis_kwargs.background_kwargs.use_viewdirs", False, False),
    ("synthesis_kwargs.background_kwargs.predict_rgb", True, False),
    ("synthesis_kwargs.background_kwargs.downscale_p_by", 1, 1),
    ("synthesis_kwargs.upsampler_kwargs.no_2d_renderer", False, False),
    ("synthesis_kwargs.upsampler_kwargs.no_residual_img", False, False),
    ("synthesis_kwargs.upsampler_kwargs.block_reses", None, None),
    ("synthesis_kwargs.upsampler_kwargs.shared_rgb_style", False, False),
)


@dataclass
class GeneratorInfo:
    """What ``stylenerf-edit info`` reports and what latent files record about their generator."""

    name: str                       # model name or file name
    path: str                       # file or directory it was loaded from
    format: str                     # "official-pickle" or "safetensors"
    file_sha256: str                # of the .pkl or the .safetensors file
    weights_sha256: str             # of the weights themselves, the same for a .pkl and its conversion
    config: GeneratorConfig
    parameter_count: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "format": self.format, "file_sha256": self.file_sha256,
                "weights_sha256": self.weights_sha256, "img_resolution": self.config.img_resolution,
                "num_ws": self.config.num_ws, "parameter_count": self.parameter_count,
                "config": self.config.to_dict(), **self.extra}


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hash of names, shapes and float32 values in name order: identifies weights across file formats."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _lookup(kwargs: Mapping[str, Any], path: str, default: Any) -> Any:
    node: Any = kwargs
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def config_from_official(init_kwargs: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> GeneratorConfig:
    """Official ``Generator`` init kwargs + its state dict -> our config.

    Sizes are read from the tensor shapes, not predicted from the kwargs: released checkpoints are known
    to differ from what their config files predict. Options this implementation does not reproduce
    raise ``ValueError`` naming the option.
    """
    for path, required, default in _REQUIRED_OPTIONS:
        value = _lookup(init_kwargs, path, default)
        if value != required and not (required is None and value in ("None", "none")):
            raise ValueError(f"unsupported StyleNeRF option {path}={value!r} (this toolkit implements "
                             f"the FFHQ configuration, which has {required!r})")
    syn = _lookup(init_kwargs, "synthesis_kwargs", {})
    cam = syn.get("camera_kwargs", {})
    rnd = syn.get("renderer_kwargs", {})
    fg_kw, bg_kw = syn.get("foreground_kwargs", {}), syn.get("background_kwargs", {})

    def shape(name: str) -> tuple[int, ...]:
        if name not in state_dict:
            raise ValueError(f"state dict lacks {name}")
        return tuple(state_dict[name].shape)

    code_dim = int(syn.get("z_dim_bg", 32))
    fg_hidden, fg_in = shape("synthesis.fg_nerf.fc_in.weight")[:2]
    bg_hidden, bg_in = shape("synthesis.bg_nerf.fc_in.weight")[:2]
    fg_blocks = len({k.split(".")[3] for k in state_dict if k.startswith("synthesis.fg_nerf.blocks.")})
    bg_blocks = len({k.split(".")[3] for k in state_dict if k.startswith("synthesis.bg_nerf.blocks.")})
    if fg_in % 6 or (bg_in - code_dim) % 8:
        raise ValueError(f"unexpected NeRF input widths {fg_in} (foreground) and {bg_in} (background)")
    for kw, freqs, what in ((fg_kw, fg_in // 6, "foreground"), (bg_kw, (bg_in - code_dim) // 8, "background")):
        if int(kw.get("n_freq_posenc", 10)) != freqs:
            raise ValueError(f"{what} NeRF input width does not match n_freq_posenc={kw.get('n_freq_posenc')}")

    img_resolution = int(init_kwargs["img_resolution"])
    nerf_resolution = int(syn.get("resolution_vol", 32))
    resolutions = [nerf_resolution * 2 ** i for i in range(1, int(math.log2(img_resolution // nerf_resolution)) + 1)]
    blocks = sorted({int(k.split(".")[1][1:]) for k in state_dict if k.startswith("synthesis.b")
                     and k.split(".")[1][1:].isdigit()})
    if blocks != resolutions:
        raise ValueError(f"upsampler blocks {blocks} do not lead from the NeRF grid {nerf_resolution} "
                         f"to img_resolution {img_resolution}")
    range_v = tuple(float(v) for v in cam.get("range_v", (0.25, 0.25)))
    return GeneratorConfig(
        img_resolution=img_resolution,
        z_dim=int(init_kwargs.get("z_dim", 512)),
        w_dim=int(init_kwargs.get("w_dim", 512)),
        img_channels=int(init_kwargs.get("img_channels", 3)),
        mapping_layers=sum(1 for k in state_dict if k.startswith("mapping.fc") and k.endswith(".weight")),
        mapping_lr_multiplier=float(_lookup(init_kwargs, "mapping_kwargs.lr_multiplier", 0.01)),
        nerf_resolution=nerf_resolution,
        feature_dim=shape("synthesis.fg_nerf.feat_out.weight")[0],
        fg_hidden=fg_hidden, fg_layers=fg_blocks + 1, fg_freqs=fg_in // 6,
        bg_hidden=bg_hidden, bg_layers=bg_blocks + 1, bg_freqs=(bg_in - code_dim) // 8, bg_code_dim=code_dim,
        n_ray_samples=int(rnd.get("n_ray_samples", 14)),
        n_bg_samples=int(rnd.get("n_bg_samples", 4)),
        depth_range=tuple(float(v) for v in cam.get("depth_range", (0.5, 6.0))),
        bg_start=float(cam.get("bg_start", 1.0)),
        camera=CameraPrior(range_u=tuple(float(v) for v in cam.get("range_u", (0.0, 0.0))), range_v=range_v,
                           range_radius=tuple(float(v) for v in cam.get("range_radius", (2.732, 2.732))),
                           fov=float(cam.get("fov", 49.13)), gaussian=bool(cam.get("gaussian_camera", False))),
        block_channels=[shape(f"synthesis.b{r}.conv0.weight")[0] for r in resolutions],
        adapter_channels=[shape(f"synthesis.b{r}.conv0.adapter.0.weight")[0] for r in resolutions],
        kernel_size=shape(f"synthesis.b{resolutions[0]}.conv1.weight")[-1] if resolutions else 1,
        conv_clamp=None if syn.get("conv_clamp") is None else float(syn["conv_clamp"]),
    )


def generator_from_official(init_kwargs: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> Generator:
    """Build a generator from official ``init_kwargs`` and a state dict with official names (strict)."""
    cfg = config_from_official(init_kwargs, state_dict)
    weights = {}
    for name, tensor in state_dict.items():
        if name.endswith("resample_filter"):
            # A design constant of every official layer; our resampling hard-codes it.
            if tensor.shape != DESIGN_RESAMPLE_FILTER.shape or not torch.allclose(tensor.float(), DESIGN_RESAMPLE_FILTER):
                raise ValueError(f"{name} differs from the [1, 3, 3, 1] filter this implementation uses")
            continue
        weights[name] = tensor
    G = Generator(cfg)
    _load_strict(G, weights)
    return G.eval().requires_grad_(False)


def _load_strict(G: Generator, weights: Mapping[str, torch.Tensor]) -> None:
    own = G.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(f"weights do not match the generator: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(own[name].shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    G.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)


def save_pretrained(G: Generator, out_dir: str | Path, source: Mapping[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``out_dir`` (created); returns the directory."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT_NAME})
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool_version": __version__,
              "weights_sha256": weights_sha256(state), "source": dict(source or {}), "generator": G.cfg.to_dict()}
    write_text(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out


def _read_native(directory: Path) -> tuple[Generator, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{directory}: expected {CONFIG_NAME} and {WEIGHTS_NAME} in this directory "
                              "(write them with `stylenerf-edit convert CHECKPOINT.pkl DIR`)")
    try:
        config = json.loads(config_path.read_text())
        if config.get("format") != FORMAT_NAME:
            raise ValueError(f"'format' is {config.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(config.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"format_version {config['format_version']} is newer than this toolkit "
                             f"supports ({FORMAT_VERSION}); upgrade stylenerf-edit")
        cfg = GeneratorConfig.from_dict(config["generator"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{config_path}: not a valid generator config ({e})") from None
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({e}); convert the checkpoint again") from None
    G = Generator(cfg)
    try:
        _load_strict(G, weights)
    except ValueError as e:
        raise CheckpointError(f"{weights_path}: {e}; convert the checkpoint again") from None
    return G.eval().requires_grad_(False), {"source": config.get("source", {}),
                                            "tool_version": config.get("tool_version")}


def _read_pickle(path: Path, key: str) -> tuple[Generator, dict[str, Any]]:
    net = read_official_pickle(path, key=key)
    if net.class_name != "Generator":
        raise CheckpointError(f"{path}: '{key}' is a {net.class_name}, not a StyleNeRF Generator")
    try:
        G = generator_from_official(net.init_kwargs, net.state_dict)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: {one_line(e)[:300]}") from None
    return G, {"official_key": key, "module_src_sha256": net.module_src_sha256}


BUNDLED_PREFIX = "bundled:"
DEFAULT_NETWORK = "bundled:heads"


def bundled_models() -> dict[str, Path]:
    """Models shipped inside the package: ``bundled:<name>`` -> directory (see synthetic/MODEL_CARD.md)."""
    root = Path(__file__).resolve().parents[1] / "synthetic" / "bundled"
    return {f"{BUNDLED_PREFIX}{d.name}": d for d in sorted(root.iterdir()) if (d / CONFIG_NAME).is_file()} \
        if root.is_dir() else {}


def resolve_network(network: str | Path) -> Path:
    """A path, a bundled model (``bundled:heads``) or a downloaded official model (``ffhq_256``) -> a path."""
    name = str(network)
    if name.startswith(BUNDLED_PREFIX):
        bundled = bundled_models()
        if name not in bundled:
            raise CheckpointError(f"{name}: no such bundled model (available: {', '.join(bundled) or 'none'})")
        return bundled[name]
    path = Path(network).expanduser()
    if path.exists():
        return path
    if name in MODELS:
        found = find_downloaded(name)
        if found is None:
            raise CheckpointError(f"{name} is not downloaded: run `stylenerf-edit download {name}`, or place "
                                  f"a manually downloaded {MODELS[name]} at {models_dir() / MODELS[name]}")
        return found
    known = ", ".join([*bundled_models(), *MODELS])
    raise CheckpointError(f"{network}: no such file or directory, and not a known model name "
                          f"({known}); pass a .pkl, a converted directory, or a model name")


def model_directory(network: str | Path) -> Path:
    """Where a model's side files live (pose calibration, pose predictor, edit directions): its own directory,
    or the folder of a pickle."""
    path = resolve_network(network)
    return path if path.is_dir() else path.parent


def load_with_info(network: str | Path = DEFAULT_NETWORK, device: str | torch.device = "cpu", key: str = "G_ema") -> tuple[Generator, GeneratorInfo]:
    """Load a generator and describe it (see :func:`load_generator`)."""
    path = resolve_network(network)
    if path.is_dir():
        G, extra = _read_native(path)
        fmt, hashed = "safetensors", path / WEIGHTS_NAME
    elif path.suffix == ".safetensors" or path.name == CONFIG_NAME:
        G, extra = _read_native(path.parent)
        fmt, hashed = "safetensors", path.parent / WEIGHTS_NAME
    else:
        if not is_official_pickle(path) and path.suffix != ".pkl":
            raise CheckpointError(f"{path}: not a generator (expected an official .pkl, a converted directory "
                                  f"with {CONFIG_NAME} and {WEIGHTS_NAME}, or a model name)")
        G, extra = _read_pickle(path, key)
        fmt, hashed = "official-pickle", path
    state = G.state_dict()
    named = str(network).startswith(BUNDLED_PREFIX) or not Path(str(network)).exists()
    info = GeneratorInfo(name=str(network) if named else path.name, path=str(path),
                         format=fmt, file_sha256=sha256_file(hashed), weights_sha256=weights_sha256(state),
                         config=G.cfg, parameter_count=sum(p.numel() for p in G.parameters()), extra=extra)
    return G.to(device), info


def load_generator(network: str | Path = DEFAULT_NETWORK, device: str | torch.device = "cpu", key: str = "G_ema") -> Generator:
    """Load a generator in eval mode with gradients off for its weights.

    Args:
        network: an official ``.pkl`` (read safely, no embedded code runs), a directory written by
            :func:`save_pretrained`, its ``model.safetensors``, a bundled model (``bundled:heads``, the
            default) or a downloaded model name (``ffhq_256``).
        device: where to put it.
        key: which network of an official pickle: ``G_ema`` (the one every official app uses) or ``G``.
    """
    return load_with_info(network, device, key)[0]


def describe(network: str | Path = DEFAULT_NETWORK, key: str = "G_ema") -> GeneratorInfo:
    return load_with_info(network, "cpu", key)[1]


def resolve_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else is checked to exist."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    return dev
