"""Test helper: writes synthetic checkpoints in the format of the official StyleNeRF ``.pkl`` files.

The official files cannot be used in tests (hundreds of MB, and loading them officially executes code), so
this helper reproduces their structure without any official code: persistent objects reduce to
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, numpy scalars to
``numpy.core.multiarray.scalar``, tensors take torch's legacy per-storage route, and with
``use_omegaconf=True`` the constructor arguments are omegaconf containers, as in released checkpoints.
``tiny_official_state`` is a generator state small enough for tests that need no official data, and
``pickle_parts`` hand-builds hostile structures (one object referenced from many places).
"""

from __future__ import annotations

import contextlib
import copy
import math
import pickle
import re
import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_MODULE_SRC = "raise SystemExit('embedded module source must never be executed')"

_BUFFER_NAMES = frozenset({"alpha", "resample_filter", "w_avg"})
_CONTAINERS = {"adapter": torch.nn.Sequential, "blocks": torch.nn.ModuleList}
_CLASS_BY_NAME = {
    "mapping": "MappingNetwork",
    "synthesis": "NeRFSynthesisNetwork",
    "fg_nerf": "NeRFBlock",
    "bg_nerf": "NeRFBlock",
    "fc_in": "Style2Layer",
    "sigma_out": "ToRGBLayer",
    "feat_out": "ToRGBLayer",
    "torgb": "ToRGBLayer",
    "to_rgb": "Conv2dLayer",
    "conv0": "SynthesisLayer",
    "conv1": "SynthesisLayer",
    "affine": "FullyConnectedLayer",
}
_LAYERS_WITH_WEIGHT_GAIN = frozenset({"FullyConnectedLayer", "Conv2dLayer"})

# Official names and tiny shapes: one module of every official class and both torch containers.
_TINY_SHAPES = {
    "synthesis.alpha": (),
    "synthesis.fg_nerf.fc_in.weight": (4, 3, 1, 1),
    "synthesis.fg_nerf.fc_in.bias": (4,),
    "synthesis.fg_nerf.fc_in.resample_filter": (4, 4),
    "synthesis.fg_nerf.fc_in.affine.weight": (3, 4),
    "synthesis.fg_nerf.fc_in.affine.bias": (3,),
    "synthesis.fg_nerf.blocks.0.weight": (4, 4, 1, 1),
    "synthesis.fg_nerf.blocks.0.bias": (4,),
    "synthesis.fg_nerf.sigma_out.weight": (1, 4, 1, 1),
    "synthesis.fg_nerf.to_rgb.weight": (3, 4, 1, 1),
    "synthesis.bg_nerf.fc_in.weight": (2, 3, 1, 1),
    "synthesis.b8.resample_filter": (4, 4),
    "synthesis.b8.conv0.weight": (4, 4, 3, 3),
    "synthesis.b8.conv0.w_avg": (4,),
    "synthesis.b8.conv0.adapter.0.weight": (4, 4, 1, 1),
    "synthesis.b8.conv0.affine.weight": (4, 4),
    "synthesis.b8.torgb.weight": (3, 4, 1, 1),
    "mapping.w_avg": (4,),
    "mapping.fc0.weight": (4, 4),
    "mapping.fc0.bias": (4,),
}
TINY_INIT_KWARGS = {
    "z_dim": 4, "w_dim": 4, "c_dim": 0, "img_resolution": 8, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 1},
    "synthesis_kwargs": {
        "channel_base": 1, "architecture": "skip",
        "camera_kwargs": {"range_v": [1.4, 1.7], "fov": 12, "depth_transform": None},
        "background_kwargs": {"skips": [], "hidden_size": 2},
    },
}


@dataclass
class _Node:
    """One module of the tree recovered from flat state-dict names."""

    path: tuple[str, ...]
    parameters: OrderedDict[str, torch.Tensor | _Reduces] = field(default_factory=OrderedDict)
    buffers: OrderedDict[str, torch.Tensor | _Reduces] = field(default_factory=OrderedDict)
    children: OrderedDict[str, _Node] = field(default_factory=OrderedDict)


@dataclass
class _StandIns:
    """Functions importable under the official names while a checkpoint is being written."""

    reconstruct_persistent_obj: Callable[..., Any]
    numpy_scalar: Callable[..., Any]


class _Reduces:
    """Pickles as the call ``function(*args)``, whatever ``function`` is, then applies ``state`` if given."""

    def __init__(self, function: Callable[..., Any], args: tuple, *state: Any) -> None:
        self.function, self.args, self.state = function, args, state

    def __reduce__(self) -> tuple:
        return self.function, self.args, *self.state


def tiny_official_state(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """A generator state with official names in official order, tiny shapes, float16-exact float32 values."""
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict((name, torch.randn(shape, generator=generator).half().float())
                       for name, shape in _TINY_SHAPES.items())


def _class_name(path: tuple[str, ...]) -> str:
    """Official class of the module at ``path`` (spec b.1)."""
    if not path:
        return "Generator"
    name, parent = path[-1], path[-2] if len(path) > 1 else ""
    if parent == "blocks":
        return "Style2Layer"
    if parent == "adapter":
        return "Conv2dLayer"
    if name in _CLASS_BY_NAME:
        return _CLASS_BY_NAME[name]
    if re.fullmatch(r"b\d+", name):
        return "SynthesisBlock"
    if re.fullmatch(r"fc\d+", name):
        return "FullyConnectedLayer"
    raise ValueError(f"no official StyleNeRF class for module {'.'.join(path)!r}")


def _module_tree(state_dict: Mapping[str, torch.Tensor | _Reduces]) -> _Node:
    """Nest flat official names; insertion order reproduces ``state_dict()`` order on reading."""
    root = _Node(())
    for key, value in state_dict.items():
        *path, leaf = key.split(".")
        node = root
        for name in path:
            node = node.children.setdefault(name, _Node((*node.path, name)))
        if isinstance(value, _Reduces):
            (node.buffers if leaf in _BUFFER_NAMES else node.parameters)[leaf] = value
        elif leaf in _BUFFER_NAMES:
            node.buffers[leaf] = value.detach().clone().contiguous()
        else:
            node.parameters[leaf] = torch.nn.Parameter(value.detach().clone().contiguous(), requires_grad=False)
    return root


def _persistent(stand_ins: _StandIns, class_name: str, state: dict, module_src: str, version: int) -> _Reduces:
    meta = {"type": "class", "version": version, "module_src": module_src, "class_name": class_name,
            "state": state}
    return _Reduces(stand_ins.reconstruct_persistent_obj, (meta,))


def _numpy_scalar(stand_ins: _StandIns, value: np.generic) -> _Reduces:
    return _Reduces(stand_ins.numpy_scalar, (value.dtype, value.tobytes()))


def _module_state(**attributes: Any) -> dict:
    """The ``__dict__`` a fresh ``nn.Module`` would pickle (hook dicts included), in eval mode."""
    state = dict(torch.nn.Module().__dict__)
    state.update(training=False, **attributes)
    return state


def _pickled_module(node: _Node, stand_ins: _StandIns, module_src: str, version: int,
                    root_attributes: Mapping[str, Any]) -> Any:
    """A persistent record, or a real torch container holding records, for ``node`` and its subtree."""
    children = OrderedDict((name, _pickled_module(child, stand_ins, module_src, version, root_attributes))
                           for name, child in node.children.items())
    name = node.path[-1] if node.path else ""
    if name in _CONTAINERS:
        container = _CONTAINERS[name]()
        container.training = False
        container._modules.update(children)
        return container
    class_name = _class_name(node.path)
    attributes: dict[str, Any] = {"_init_args": (), "_init_kwargs": {}}
    if class_name in _LAYERS_WITH_WEIGHT_GAIN and isinstance(node.parameters.get("weight"), torch.Tensor):
        fan_in = math.prod(node.parameters["weight"].shape[1:])
        attributes["weight_gain"] = _numpy_scalar(stand_ins, np.float64(1.0 / math.sqrt(fan_in)))
    if class_name == "NeRFSynthesisNetwork":
        camera_state = {"camera_matrix": torch.eye(4).unsqueeze(0), "_init_args": (), "_init_kwargs": {}}
        attributes["C"] = _persistent(stand_ins, "CameraRay", camera_state, module_src, version)
    if not node.path:
        attributes.update(root_attributes)
    state = _module_state(_parameters=node.parameters, _buffers=node.buffers, _modules=children, **attributes)
    return _persistent(stand_ins, class_name, state, module_src, version)


@contextlib.contextmanager
def _official_module_names() -> Iterator[_StandIns]:
    """Make stand-in functions importable under the official module names, only while writing.

    pickle stores a function by module and name and checks that the name resolves to the same object;
    registering throw-away modules in ``sys.modules`` satisfies that without any official code.
    """
    persistence = types.ModuleType("torch_utils.persistence")
    multiarray = types.ModuleType("numpy.core.multiarray")

    def _reconstruct_persistent_obj(meta: dict) -> Any:
        raise AssertionError("stand-in for writing only")

    def scalar(dtype: np.dtype, raw: bytes) -> Any:
        raise AssertionError("stand-in for writing only")

    modules = {}
    for module, function in ((persistence, _reconstruct_persistent_obj), (multiarray, scalar)):
        function.__module__, function.__qualname__ = module.__name__, function.__name__
        setattr(module, function.__name__, function)
        modules[module.__name__] = module
        parent = module.__name__.rpartition(".")[0]
        while parent and parent not in sys.modules:  # pickle imports the parent packages first
            modules[parent] = types.ModuleType(parent)
            parent = parent.rpartition(".")[0]
    replaced = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield _StandIns(persistence._reconstruct_persistent_obj, multiarray.scalar)
    finally:
        for name, previous in replaced.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _root_attributes(init_kwargs: dict, use_omegaconf: bool) -> dict[str, Any]:
    """The generator record's own attributes: the constructor's scalar kwargs, ``encoder`` and the kwargs
    themselves (an omegaconf DictConfig with ``use_omegaconf``, as run_train.py builds them)."""
    kwargs: Any = copy.deepcopy(init_kwargs)
    if use_omegaconf:
        from omegaconf import OmegaConf

        kwargs = OmegaConf.create(kwargs)
    attributes: dict[str, Any] = {name: init_kwargs[name] for name in
                                  ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels") if name in init_kwargs}
    return {**attributes, "encoder": None, "_init_args": (), "_init_kwargs": kwargs}


def write_official_pickle(
    path: str | Path,
    init_kwargs: dict,
    state_dict: Mapping[str, torch.Tensor],
    *,
    use_omegaconf: bool = False,
    module_src: str = DEFAULT_MODULE_SRC,
    extra_globals: Mapping[str, tuple] | None = None,
    training_state_dict: Mapping[str, torch.Tensor] | None = None,
    persistence_version: int = 6,
) -> None:
    """Write a synthetic official-format checkpoint (top level as spec d.1) to ``path``.

    ``state_dict`` (official flat names) becomes ``G_ema``; ``training_state_dict`` becomes ``G``
    (default: the same values). ``extra_globals`` injects what a safe reader must refuse: it maps names to
    ``(function, args)`` or ``(function, args, state)`` calls pickled with ``function`` by reference; a
    state-dict key replaces that tensor of ``G_ema``, any other name becomes an attribute of ``G_ema``.
    ``persistence_version`` goes into every persistent record, to produce an unsupported persistence format.
    """
    root_attributes = _root_attributes(init_kwargs, use_omegaconf)
    injected = {name: _Reduces(*call) for name, call in (extra_globals or {}).items()}
    ema_state = {**state_dict, **{name: call for name, call in injected.items() if name in state_dict}}
    ema_attributes = {name: call for name, call in injected.items() if name not in state_dict}

    with _official_module_names() as stand_ins:
        def generator(weights: Mapping[str, torch.Tensor | _Reduces], extra: Mapping[str, Any]) -> _Reduces:
            return _pickled_module(_module_tree(weights), stand_ins, module_src, persistence_version,
                                   {**root_attributes, **extra})

        discriminator_state = _module_state(
            _parameters=OrderedDict(weight=torch.nn.Parameter(torch.linspace(-1.0, 1.0, 8).reshape(2, 4),
                                                              requires_grad=False)),
            _buffers=OrderedDict(), _modules=OrderedDict(), _init_args=(), _init_kwargs={"c_dim": 0},
        )
        snapshot = {
            "training_set_kwargs": {
                "class_name": "training.dataset.ImageFolderDataset", "path": "ffhq.zip",
                "resolution": init_kwargs.get("img_resolution"), "use_labels": False, "max_size": 70000,
                "xflip": True,
            },
            "G": generator(training_state_dict if training_state_dict is not None else state_dict, {}),
            "D": _persistent(stand_ins, "Discriminator", discriminator_state, module_src, persistence_version),
            "G_ema": generator(ema_state, ema_attributes),
            "augment_pipe": None,
        }
        with Path(path).open("wb") as file:
            pickle.dump(snapshot, file, protocol=4)


class PickleParts:
    """Hand-built pieces of an official-format file, for the shapes the writer never produces (hostile files).

    Python objects used in several places pickle once and are referenced from each place, so sharing one
    module, tensor, storage or list here gives a tiny file that names the same object over and over.
    """

    def __init__(self, stand_ins: _StandIns, module_src: str) -> None:
        self._stand_ins, self._module_src = stand_ins, module_src

    def module(self, class_name: str, parameters: Mapping[str, Any] | None = None,
               modules: Mapping[str, Any] | None = None, **attributes: Any) -> _Reduces:
        """A persistent module record with these parameters, submodules and attributes (``_init_kwargs``...)."""
        state = _module_state(_parameters=OrderedDict(parameters or {}), _buffers=OrderedDict(),
                              _modules=OrderedDict(modules or {}), **{"_init_args": (), "_init_kwargs": {},
                                                                     **attributes})
        return _persistent(self._stand_ins, class_name, state, self._module_src, 6)

    @staticmethod
    def view(storage: torch.storage.TypedStorage, offset: int, size: tuple[int, ...],
             stride: tuple[int, ...]) -> _Reduces:
        """A tensor as torch pickles it: a view of ``storage``, which is pickled once however many views share it."""
        return _Reduces(torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, OrderedDict()))

    @staticmethod
    def dump(path: str | Path, g_ema: Any) -> None:
        """Write a checkpoint whose only entry is ``G_ema``."""
        with Path(path).open("wb") as file:
            pickle.dump({"G_ema": g_ema}, file, protocol=4)


@contextlib.contextmanager
def pickle_parts(module_src: str = DEFAULT_MODULE_SRC) -> Iterator[PickleParts]:
    """Build and dump hand-made checkpoints (the official module names are importable only meanwhile)."""
    with _official_module_names() as stand_ins:
        yield PickleParts(stand_ins, module_src)


# --- Full-size official FFHQ configurations (spec a.2-a.4, b.3), random weights -------------------------------

FFHQ_RESOLUTIONS = (256, 512, 1024)
# Spec a.3: what the official constructor gives per img_resolution (parameters, state_dict entries, num_ws).
FFHQ_EXPECTED = {
    256: {"parameters": 5_264_749, "buffer_elements": 983, "entries": 157, "num_ws": 17},
    512: {"parameters": 5_411_840, "buffer_elements": 1_065, "entries": 180, "num_ws": 19},
    1024: {"parameters": 5_481_547, "buffer_elements": 1_147, "entries": 203, "num_ws": 21},
}
RESAMPLE_FILTER = torch.outer(torch.tensor([1.0, 3.0, 3.0, 1.0]), torch.tensor([1.0, 3.0, 3.0, 1.0])) / 64


def official_ffhq_init_kwargs(img_resolution: int) -> dict:
    """The ``init_kwargs`` an official FFHQ checkpoint stores (spec a.2, with the keys construction adds, a.4).

    Written from the spec's values, so tests need no official data; the three released configurations differ
    only in ``img_resolution`` (and ``upsampler_kwargs.out_res``, which construction sets from it).
    """
    return {
        "z_dim": 512, "w_dim": 512,
        "mapping_kwargs": {"num_layers": 8},
        "synthesis_kwargs": {
            "num_fp16_res": 4, "channel_base": 1, "channel_max": 1024, "conv_clamp": 256, "kernel_size": 1,
            "architecture": "skip", "upsample_mode": "nn_cat", "z_dim_bg": 32, "z_dim": 0,
            "resolution_vol": 32, "resolution_start": 32, "rgb_out_dim": 256, "use_noise": False,
            "module_name": "training.stylenerf.NeRFSynthesisNetwork", "no_bbox": True, "margin": 0,
            "magnitude_ema_beta": 0.999,
            "camera_kwargs": {
                "range_v": [1.4157963267948965, 1.7257963267948966], "range_u": [-0.3, 0.3],
                "range_radius": [1.0, 1.0], "depth_range": [0.88, 1.12], "fov": 12, "gaussian_camera": True,
                "angular_camera": True, "depth_transform": None, "dists_normalized": False,
                "ray_align_corner": False, "bg_start": 0.5,
            },
            "renderer_kwargs": {"n_bg_samples": 4, "n_ray_samples": 14, "abs_sigma": False, "hierarchical": True,
                                "no_background": False},
            "foreground_kwargs": {
                "positional_encoding": "normal", "downscale_p_by": 1, "use_style": "StyleGAN2", "predict_rgb": True,
                "use_viewdirs": False, "z_dim": 0, "w_dim": 512, "rgb_out_dim": 256, "activation": "lrelu",
            },
            "background_kwargs": {
                "positional_encoding": "normal", "hidden_size": 64, "n_blocks": 4, "downscale_p_by": 1, "skips": [],
                "inverse_sphere": True, "use_style": "StyleGAN2", "predict_rgb": True, "use_viewdirs": False,
                "z_dim": 32, "w_dim": 512, "rgb_out_dim": 256, "activation": "lrelu",
            },
            "upsampler_kwargs": {
                "channel_base": 1, "channel_max": 1024, "no_2d_renderer": False, "no_residual_img": False,
                "block_reses": None, "shared_rgb_style": False, "upsample_type": "bilinear", "img_channels": 3,
                "in_res": 32, "out_res": img_resolution,
            },
            "progressive": True, "n_reg_samples": 16, "reg_full": True,
        },
        "c_dim": 0, "img_resolution": img_resolution, "img_channels": 3,
    }


def official_ffhq_shapes(img_resolution: int) -> OrderedDict[str, tuple[int, ...]]:
    """Every official state-dict name of the FFHQ generator at ``img_resolution``, in order, with its shape (b.3)."""
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    filt = (4, 4)

    def styled(prefix: str, out: int, inp: int, resample: bool = True) -> None:
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (out, inp, 1, 1), (out,)
        if resample:
            shapes[f"{prefix}.resample_filter"] = filt
        shapes[f"{prefix}.affine.weight"], shapes[f"{prefix}.affine.bias"] = (inp, 512), (inp,)

    def plain(prefix: str, out: int, inp: int, resample: bool) -> None:
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (out, inp), (out,)
        if resample:
            shapes[f"{prefix}.resample_filter"] = filt

    def conv(prefix: str, out: int, inp: int) -> None:
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"], shapes[f"{prefix}.resample_filter"] = \
            (out, inp, 1, 1), (out,), filt

    shapes["synthesis.alpha"] = ()
    styled("synthesis.fg_nerf.fc_in", 128, 60)
    for i in range(7):
        styled(f"synthesis.fg_nerf.blocks.{i}", 128, 128)
    styled("synthesis.fg_nerf.sigma_out", 1, 128, resample=False)
    styled("synthesis.fg_nerf.feat_out", 256, 128, resample=False)
    conv("synthesis.fg_nerf.to_rgb", 3, 256)
    plain("synthesis.bg_nerf.fc_in", 64, 112, resample=True)
    for i in range(3):
        plain(f"synthesis.bg_nerf.blocks.{i}", 64, 64, resample=True)
    plain("synthesis.bg_nerf.sigma_out", 1, 64, resample=False)
    plain("synthesis.bg_nerf.feat_out", 256, 64, resample=False)
    conv("synthesis.bg_nerf.to_rgb", 3, 256)
    res, inp = 64, 256
    while res <= img_resolution:
        out, b = min(32768 // res, 1024), f"synthesis.b{res}"
        shapes[f"{b}.resample_filter"] = filt
        shapes[f"{b}.conv0.weight"], shapes[f"{b}.conv0.bias"] = (out, inp, 1, 1), (out,)
        shapes[f"{b}.conv0.resample_filter"], shapes[f"{b}.conv0.w_avg"] = filt, ()
        conv(f"{b}.conv0.adapter.0", out // 4, 2 * out)
        conv(f"{b}.conv0.adapter.1", out, out // 4)
        shapes[f"{b}.conv0.affine.weight"], shapes[f"{b}.conv0.affine.bias"] = (inp, 512), (inp,)
        shapes[f"{b}.conv1.weight"], shapes[f"{b}.conv1.bias"] = (out, out, 1, 1), (out,)
        shapes[f"{b}.conv1.resample_filter"], shapes[f"{b}.conv1.w_avg"] = filt, ()
        shapes[f"{b}.conv1.affine.weight"], shapes[f"{b}.conv1.affine.bias"] = (out, 512), (out,)
        styled(f"{b}.torgb", 3, out, resample=False)
        res, inp = res * 2, out
    shapes["mapping.w_avg"] = (512,)
    for i in range(8):
        shapes[f"mapping.fc{i}.weight"], shapes[f"mapping.fc{i}.bias"] = (512, 512), (512,)
    return shapes


def official_ffhq_state(img_resolution: int, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """A trained-looking random FFHQ generator state with official names, order and shapes (spec b.3).

    Weights come from this package's generator initialised under ``seed`` (its parameters carry the official
    names), then everything is moved off its init value as after training: biases and the magnitude buffers
    (``*.w_avg`` scalars) perturbed, ``mapping.w_avg`` a random vector, ``synthesis.alpha`` = 1 (finished
    curriculum). ``resample_filter`` buffers, which the package's generator does not keep, get their design
    value. Values are float16-exact float32, as in the parity fixtures.
    """
    from stylenerf_edit.generator.network import Generator, GeneratorConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ours = Generator(GeneratorConfig(img_resolution=img_resolution)).state_dict()
    generator = torch.Generator().manual_seed(seed + 1)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, shape in official_ffhq_shapes(img_resolution).items():
        if name.endswith("resample_filter"):
            value = RESAMPLE_FILTER.clone()
        elif name == "synthesis.alpha":
            value = torch.tensor(1.0)
        elif name == "mapping.w_avg":
            value = 0.5 * torch.randn(shape, generator=generator)
        elif name.endswith(".w_avg"):
            value = 0.5 + 1.5 * torch.rand(shape, generator=generator)
        else:
            value = ours[name].clone()
            if name.endswith(".bias"):
                value += 0.1 * torch.randn(shape, generator=generator)
        if tuple(value.shape) != tuple(shape):
            raise AssertionError(f"{name}: the package's generator has shape {tuple(value.shape)}, "
                                 f"the official one {shape}")
        state[name] = value.half().float()
    return state


def discriminator_state(shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """Random tensors of the given shapes, for extra networks (a discriminator) written beside the generator."""
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict((name, torch.randn(shape, generator=generator)) for name, shape in shapes.items())


def _pickled_network(node: _Node, stand_ins: _StandIns, module_src: str, class_name: str) -> _Reduces:
    """A persistent record of ``class_name`` for ``node``; submodules become generic ``Conv2dLayer`` records."""
    children = OrderedDict((name, _pickled_network(child, stand_ins, module_src,
                                                   "DiscriminatorBlock" if not node.path else "Conv2dLayer"))
                           for name, child in node.children.items())
    state = _module_state(_parameters=node.parameters, _buffers=node.buffers, _modules=children,
                          _init_args=(), _init_kwargs={} if node.path else {"c_dim": 0, "channel_base": 2})
    return _persistent(stand_ins, class_name, state, module_src, 6)


def write_official_pickle_with_extras(
    path: str | Path,
    init_kwargs: dict,
    state_dict: Mapping[str, torch.Tensor],
    *,
    use_omegaconf: bool = False,
    training_state_dict: Mapping[str, torch.Tensor] | None = None,
    networks: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    entries: Mapping[str, Any] | None = None,
    module_src: str = DEFAULT_MODULE_SRC,
) -> None:
    """Like :func:`write_official_pickle`, with more in the file than the generator's kwargs imply.

    ``networks`` maps top-level keys (``"D"`` replaces the tiny default discriminator, ``"D_ema"`` is the
    entry spec d.1 mentions for configs with a discriminator EMA) to flat state dicts, written as persistent
    ``Discriminator`` records; ``entries`` adds plain picklable top-level entries. Released ffhq_1024.pkl is
    ~37.5 MB larger than its config predicts (spec a.5): a reader must take G_ema alone and ignore the rest.
    """
    root_attributes = _root_attributes(init_kwargs, use_omegaconf)
    with _official_module_names() as stand_ins:
        def generator(weights: Mapping[str, torch.Tensor]) -> _Reduces:
            return _pickled_module(_module_tree(weights), stand_ins, module_src, 6, root_attributes)

        tiny_discriminator = _module_state(
            _parameters=OrderedDict(weight=torch.nn.Parameter(torch.linspace(-1.0, 1.0, 8).reshape(2, 4),
                                                              requires_grad=False)),
            _buffers=OrderedDict(), _modules=OrderedDict(), _init_args=(), _init_kwargs={"c_dim": 0},
        )
        snapshot: dict[str, Any] = {
            "training_set_kwargs": {
                "class_name": "training.dataset.ImageFolderDataset", "path": "ffhq.zip",
                "resolution": init_kwargs.get("img_resolution"), "use_labels": False, "max_size": 70000,
                "xflip": True,
            },
            "G": generator(training_state_dict if training_state_dict is not None else state_dict),
            "D": _persistent(stand_ins, "Discriminator", tiny_discriminator, module_src, 6),
            "G_ema": generator(state_dict),
            "augment_pipe": None,
        }
        for key, weights in (networks or {}).items():
            snapshot[key] = _pickled_network(_module_tree(weights), stand_ins, module_src, "Discriminator")
        snapshot.update(entries or {})
        with Path(path).open("wb") as file:
            pickle.dump(snapshot, file, protocol=4)
