"""Generator speed: forward and forward+backward (w.r.t. ws) per image, optionally side by side with the official code.

Random weights with the real shapes of the official FFHQ configs (128 = the fixture config, 256, 512),
frozen as the checkpoint loaders return them, so the backward computes the ws gradient only (as in an
inversion step). Prints the median of ``--repeats`` timed runs after one warm-up, with the torch thread
count and the load average (other processes on the cores slow the runs down).

    python bench/generator.py [--resolutions 128 256 512] [--repeats 5] [--threads 2] [--batch 1]

Side by side with the official generator (``--official-repo PATH``, CPU only): the official
``training.networks.Generator`` is imported from a local copy of facebookresearch/StyleNeRF, built with the
FFHQ config exactly as its ``conf/`` files compose it (``model=stylenerf_ffhq spec=paper256``, which gives the
same generator for every resolution) and given this project's random weights, so both compute the same
function: the script checks that the coarse-only images agree (max |diff| <= 1e-3) before timing. Each
measurement then alternates the two (ours, official, ours, official, ...) in one process, after one warm-up
of each, and reports the median and range of each and the ratio of the medians. The official code runs as
its apps run it: eval mode, ``force_fp32``, ``synthesis.alpha`` 1, explicit camera matrices and background
codes; "NeRF gradients" calls its NeRF blocks with ``requires_grad=True`` (otherwise identical forward; in
eval mode the official NeRF runs without gradient, which is the "frozen NeRF" column).

    python bench/generator.py --official-repo /tmp/stylenerf-official --resolutions 256 --repeats 7 --threads 2

Setting up the official copy (never inside this repository):

    git clone https://github.com/facebookresearch/StyleNeRF /tmp/stylenerf-official   # commit 7f5610a
    pip install einops==0.8.2   # imported by the official networks; not a dependency of this project

Its other imports (scipy, omegaconf, click, requests) are already installed with this project. It needs
Python <= 3.11 (it imports ``imp``, ``sndhdr`` and ``distutils``) and imports two names from modules that
numpy 2 removed (``numpy.lib.arraysetops.isin``, ``numpy.lib.function_base.angle``); with numpy >= 2 this
script registers stand-ins for those two modules that forward to numpy's own ``isin`` and ``angle``. The
official custom CUDA ops fall back to their PyTorch reference implementations on the CPU; nothing is compiled.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import platform
import statistics
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from stylenerf_edit.generator.camera import Camera, CameraPrior
from stylenerf_edit.generator.network import Generator, GeneratorConfig

MEASURES = ("forward", "fwd+bwd, NeRF gradients", "fwd+bwd, frozen NeRF")
PARITY_TOLERANCE = 1e-3   # coarse-only images of the two implementations (observed ~3e-5 at 256)


def time_alternating(calls: list[Callable[[], None]], repeats: int) -> list[list[float]]:
    """Seconds of ``repeats`` runs of each call, interleaved (A B A B ...), after one warm-up of each."""
    for fn in calls:
        fn()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for k, fn in enumerate(calls):
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return times


def our_calls(G: Generator, ws: torch.Tensor, bg: torch.Tensor, camera: Camera,
              device: str) -> dict[str, Callable[[], None]]:
    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad():
            G.synthesize(ws, camera, bg)
        sync()

    def forward_backward(nerf_grad: bool) -> None:
        w = ws.clone().requires_grad_(True)
        G.synthesize(w, camera, bg, nerf_grad=nerf_grad).img.square().mean().backward()
        sync()

    return dict(zip(MEASURES, (forward, lambda: forward_backward(True), lambda: forward_backward(False))))


def import_official(repo: Path) -> Any:
    """The official ``training.networks`` module from a local copy of facebookresearch/StyleNeRF."""
    if not (repo / "training" / "networks.py").is_file() or not (repo / "conf" / "model").is_dir():
        raise SystemExit(f"error: {repo} is not a copy of facebookresearch/StyleNeRF (no training/networks.py "
                         "or conf/model/): clone it there, see `python bench/generator.py --help`")
    # numpy 2 removed these modules; the official code imports one unused name from each.
    for module, name in (("numpy.lib.arraysetops", "isin"), ("numpy.lib.function_base", "angle")):
        try:
            importlib.import_module(module)
        except ImportError:
            stand_in = types.ModuleType(module)
            setattr(stand_in, name, getattr(np, name))
            sys.modules[module] = stand_in
    sys.path.insert(0, str(repo))
    try:
        return importlib.import_module("training.networks")
    except ImportError as e:
        raise SystemExit(f"error: importing the official code from {repo} failed ({e}); "
                         "see `python bench/generator.py --help` for its requirements") from None


def official_generator(networks: Any, repo: Path, resolution: int) -> torch.nn.Module:
    """The official FFHQ generator as ``run_train.py model=stylenerf_ffhq spec=paper256`` composes it."""
    from omegaconf import OmegaConf

    top = OmegaConf.load(repo / "conf" / "config.yaml")
    cfg = OmegaConf.merge({k: v for k, v in top.items() if k != "defaults"},
                          {"model": OmegaConf.load(repo / "conf" / "model" / "stylenerf_ffhq.yaml"),
                           "spec": OmegaConf.load(repo / "conf" / "spec" / "paper256.yaml")})
    kwargs = OmegaConf.to_container(cfg.model.G_kwargs, resolve=True)
    kwargs.pop("class_name")
    return networks.Generator(**kwargs, c_dim=0, img_resolution=resolution, img_channels=3)


def set_official_nerf_grad(official: torch.nn.Module, enabled: bool) -> None:
    """Call the official NeRF blocks with ``requires_grad=True`` (an instance attribute shadows the method)."""
    for block in (official.synthesis.fg_nerf, official.synthesis.bg_nerf):
        if enabled:
            block.forward = functools.partial(type(block).forward, block, requires_grad=True)
        else:
            block.__dict__.pop("forward", None)


def official_calls(official: torch.nn.Module, G: Generator, ws: torch.Tensor, bg: torch.Tensor,
                   camera: Camera) -> dict[str, Callable[[], None]]:
    """The three measurements on the official generator, after checking it computes what ours computes."""
    missing, unexpected = official.load_state_dict(G.state_dict(), strict=False)
    # Our state dict leaves out the official resample_filter buffers (a design constant, [1,3,3,1] outer product).
    if unexpected or any(not k.endswith("resample_filter") for k in missing):
        raise SystemExit(f"error: the official generator's parameters differ from ours (missing "
                         f"{[k for k in missing if not k.endswith('resample_filter')]}, unexpected {unexpected})")
    official.eval().requires_grad_(False)
    B = ws.shape[0]
    cameras = official.synthesis.get_camera(batch_size=B, mode=CameraPrior().to_list_mode(camera), device="cpu")
    codes = (torch.zeros(B, 0), torch.zeros(B, 0), bg, torch.zeros_like(bg))

    def render(w: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return official.synthesis(w, camera_matrices=cameras, latent_codes=codes, force_fp32=True, **kwargs)["img"]

    with torch.no_grad():
        diff = (render(ws, disable_hierarchical=True) - G.synthesize(ws, camera, bg, hierarchical=False).img).abs()
    if float(diff.max()) > PARITY_TOLERANCE:
        raise SystemExit(f"error: the official and our generator disagree (max |diff| {float(diff.max()):.2e} on "
                         "the coarse-only image): the official copy is not the expected commit")

    def forward() -> None:
        set_official_nerf_grad(official, False)
        with torch.no_grad():
            render(ws)

    def forward_backward(nerf_grad: bool) -> None:
        set_official_nerf_grad(official, nerf_grad)
        w = ws.clone().requires_grad_(True)
        render(w).square().mean().backward()

    return dict(zip(MEASURES, (forward, lambda: forward_backward(True), lambda: forward_backward(False))))


def bench(resolution: int, repeats: int, batch: int, device: str, official_repo: Path | None,
          networks: Any) -> dict[str, list[list[float]]]:
    """Per measure, the seconds per image of each contender (ours first, then the official code if given)."""
    G = Generator(GeneratorConfig(img_resolution=resolution)).eval().requires_grad_(False).to(device)
    g = torch.Generator().manual_seed(0)
    ws = G.mapping(G.sample_z(batch, g), truncation_psi=0.7).detach()
    bg = G.sample_bg_code(batch, g)
    camera = Camera(yaw=10.0, pitch=5.0)
    contenders = [our_calls(G, ws, bg, camera, device)]
    if official_repo is not None:
        contenders.append(official_calls(official_generator(networks, official_repo, resolution), G, ws, bg, camera))
    return {m: [[t / batch for t in ts] for ts in time_alternating([c[m] for c in contenders], repeats)]
            for m in MEASURES}


def spread(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} ({min(times):.3f}–{max(times):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--official-repo", type=Path, default=None, metavar="PATH",
                        help="also time the official generator from this copy of facebookresearch/StyleNeRF, "
                             "alternating with ours (CPU only)")
    args = parser.parse_args()
    networks = None
    if args.official_repo is not None:
        if args.device != "cpu":
            parser.error("--official-repo times the official code on the CPU: add --device cpu")
        warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
        networks = import_official(args.official_repo.resolve())
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {platform.processor() or platform.machine()}, median of {args.repeats}, "
          f"load average {load:.2f}")
    if networks is None:
        print("| config | forward (s/img) | forward+backward, NeRF grad (s/img) | "
              "forward+backward, frozen NeRF (s/img) |")
        print("|---|---|---|---|")
    else:
        print(f"# official code from {args.official_repo}, alternating with ours in this process; "
              "seconds per image: median (min–max)")
        print("| config | measure | ours | official | official / ours (medians) |")
        print("|---|---|---|---|---|")
    for res in args.resolutions:
        result = bench(res, args.repeats, args.batch, args.device, args.official_repo, networks)
        if networks is None:
            print(f"| {res} | " + " | ".join(f"{statistics.median(result[m][0]):.3f}" for m in MEASURES) + " |",
                  flush=True)
            continue
        for m in MEASURES:
            ours, official = result[m]
            ratio = statistics.median(official) / statistics.median(ours)
            print(f"| {res} | {m} | {spread(ours)} | {spread(official)} | {ratio:.2f}× |", flush=True)
    print(f"# load average at the end {os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.2f}")


if __name__ == "__main__":
    main()
