"""Generator speed: forward and forward+backward (w.r.t. ws, NeRF gradients on) per image.

Random weights with the real shapes of the official FFHQ configs (128 = the fixture config, 256, 512),
frozen as the checkpoint loaders return them, so the backward computes the ws gradient only (as in an
inversion step). Prints the median of ``--repeats`` timed runs after one warm-up, with the torch thread
count and the load average (other processes on the cores slow the runs down).

    python bench/generator.py [--resolutions 128 256 512] [--repeats 5] [--threads 2] [--batch 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.network import Generator, GeneratorConfig


def time_call(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(resolution: int, repeats: int, batch: int, device: str) -> tuple[float, float, float]:
    G = Generator(GeneratorConfig(img_resolution=resolution)).eval().requires_grad_(False).to(device)
    g = torch.Generator().manual_seed(0)
    ws = G.mapping(G.sample_z(batch, g), truncation_psi=0.7).detach()
    bg = G.sample_bg_code(batch, g)
    camera = Camera(yaw=10.0, pitch=5.0)

    def forward() -> None:
        with torch.no_grad():
            G.synthesize(ws, camera, bg)
        if device == "cuda":
            torch.cuda.synchronize()

    def forward_backward(nerf_grad: bool) -> None:
        w = ws.clone().requires_grad_(True)
        G.synthesize(w, camera, bg, nerf_grad=nerf_grad).img.square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return (time_call(forward, repeats) / batch,
            time_call(lambda: forward_backward(True), repeats) / batch,
            time_call(lambda: forward_backward(False), repeats) / batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {platform.processor() or platform.machine()}, median of {args.repeats}, "
          f"load average {load:.2f}")
    print("| config | forward (s/img) | forward+backward, NeRF grad (s/img) | forward+backward, frozen NeRF (s/img) |")
    print("|---|---|---|---|")
    for res in args.resolutions:
        fwd, fb, fb_frozen = bench(res, args.repeats, args.batch, args.device)
        print(f"| {res} | {fwd:.3f} | {fb:.3f} | {fb_frozen:.3f} |", flush=True)


if __name__ == "__main__":
    main()
