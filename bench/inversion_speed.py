"""Inversion speed on the official FFHQ configurations: seconds per optimisation step and per photo.

Random weights with the real shapes of the official config at each ``--resolutions`` (the time does not depend
on the values), one photo, the default ``InversionConfig`` step: render through the NeRF with gradients,
LPIPS (VGG, at the image size up to 256 px) against the photo's cached features plus pixel MSE, backward to W+,
camera and background code. Each step is split into generator forward, LPIPS forward and backward. Prints the
median of ``--steps`` timed steps after one warm-up and the per-photo time at ``--photo-steps`` steps (the
default 300), with the thread count and the load average (other processes on the cores slow the runs down).

    python bench/inversion_speed.py [--resolutions 256 512] [--threads 2] [--steps 5] [--lpips-resolutions 256 128]
                                    [--bf16] [--coarse-fractions 0.7 0.8]

``--bf16`` runs the generator and LPIPS under ``torch.autocast("cpu", torch.bfloat16)`` as well and reports its
speed and how far its loss and W+ gradient are from float32's. Only CPUs with native bfloat16 arithmetic
(AVX512-BF16 or AMX) gain from it; elsewhere it is emulated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.generator.network import Generator, GeneratorConfig
from stylenerf_edit.invert.lpips import LPIPS
from stylenerf_edit.invert.optimize import InversionConfig, lpips_input


def time_steps(G: Generator, lpips: LPIPS, steps: int, bf16: bool, lpips_resolution: int,
               max_resolution: int | None = None) -> dict[str, float]:
    """Median seconds of the parts of one inversion step, and the loss and ws gradient of the last one;
    ``max_resolution``: a coarse step, the upsampler stopped there against a target of that size."""
    gen = torch.Generator().manual_seed(0)
    res = G.img_resolution if max_resolution is None else max_resolution
    ws = G.mapping(torch.randn(1, G.cfg.z_dim, generator=gen)).detach().requires_grad_(True)
    bg = torch.zeros(1, G.cfg.bg_code_dim).requires_grad_(True)
    world, intr = stack_cameras([Camera()])
    target = torch.rand(1, 3, res, res, generator=gen) * 2 - 1
    with torch.no_grad():
        features = lpips.features(lpips_input(target, lpips_resolution))
    parts: dict[str, list[float]] = {"generator": [], "lpips": [], "backward": [], "step": []}
    for i in range(steps + 1):
        ws.grad = bg.grad = None
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            img = G.synthesis(ws, world, intr, bg, max_resolution=max_resolution).img.float()
            t1 = time.perf_counter()
            loss = lpips.distance(lpips_input(img, lpips_resolution), features).sum() + (img - target).square().mean()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if i:   # the first step warms up allocators and caches
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                parts[k].append(v)
    return {**{k: statistics.median(v) for k, v in parts.items()}, "loss": float(loss.detach()),
            "grad": ws.grad.detach().clone()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--photo-steps", type=int, default=InversionConfig.steps)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--coarse-fractions", type=float, nargs="*", default=[],
                        help="also time a coarse step (InversionConfig.coarse_resolution) and print the per-photo "
                             "time of these coarse-to-fine schedules")
    parser.add_argument("--lpips-resolutions", type=int, nargs="+", default=[InversionConfig.lpips_resolution],
                        help="LPIPS sizes to time (InversionConfig.lpips_resolution), e.g. 256 128")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lpips = LPIPS("vgg")
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}")
    for res in args.resolutions:
        G = Generator(GeneratorConfig(img_resolution=res)).eval().requires_grad_(False)
        for lpips_res in args.lpips_resolutions:
            for bf16 in (False, True) if args.bf16 else (False,):
                r = time_steps(G, lpips, args.steps, bf16, lpips_res)
                line = (f"{res} px, LPIPS at {min(lpips_res, res)} px, {'bf16' if bf16 else 'fp32'}: "
                        f"{r['step']:.2f} s/step (generator {r['generator']:.2f}, LPIPS {r['lpips']:.2f}, backward "
                        f"{r['backward']:.2f}), {r['step'] * args.photo_steps / 60:.1f} min per photo at "
                        f"{args.photo_steps} steps")
                if bf16:
                    ref = time_steps(G, lpips, 1, False, lpips_res)
                    err = (r["grad"] - ref["grad"]).norm() / ref["grad"].norm()
                    line += f"; loss {r['loss']:.4f} vs {ref['loss']:.4f} fp32, ws gradient off by {err:.1%}"
                print(line, flush=True)
            if args.coarse_fractions and not bf16:
                coarse_res = InversionConfig.coarse_resolution
                c = time_steps(G, lpips, args.steps, False, lpips_res, coarse_res)
                line = f"    coarse step ({coarse_res} px): {c['step']:.2f} s/step;"
                for f in args.coarse_fractions:
                    n_coarse = round(f * args.photo_steps)
                    total = n_coarse * c["step"] + (args.photo_steps - n_coarse) * r["step"]
                    line += f" coarse fraction {f:g}: {total / 60:.1f} min per photo;"
                print(line.rstrip(";"), flush=True)


if __name__ == "__main__":
    main()
