"""Quality of the bundled model against the procedural world it was distilled from.

On N held-out (head, background, camera) triples — latents from a seed the training never used, cameras
from the StyleNeRF pose prior restricted to |yaw| <= 30 deg — renders G(z, camera, bg_code) and the exact
procedural target at the model's resolution and reports mean PSNR, SSIM and LPIPS (VGG), overall and per
yaw bin. Also reproduces the attribute predictor's held-out figures.

    python bench/bundled.py [--n 256] [--seed 2026] [--network bundled:heads]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from stylenerf_edit.generator import load_with_info
from stylenerf_edit.generator.camera import CameraPrior, stack_cameras
from stylenerf_edit.metrics import psnr, ssim
from stylenerf_edit.synthetic.params import background_from_code, head_params_from_z
from stylenerf_edit.synthetic.renderer import render_heads


def held_out_cameras(n: int, gen: torch.Generator, max_yaw: float = 30.0) -> list:
    prior, out = CameraPrior(), []
    while len(out) < n:
        out += [c for c in prior.sample(n, gen) if abs(c.yaw) <= max_yaw]
    return out[:n]


def renderer_speed(resolution: int = 64, batch: int = 64, repeats: int = 5) -> float:
    """Procedural renders per second (2x2 anti-aliasing, prior cameras), median of ``repeats`` batches."""
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(repeats + 1):
        z = torch.randn(batch, 512, generator=gen)
        world, intr = stack_cameras(CameraPrior().sample(batch, gen))
        bg = torch.rand(batch, 3, generator=gen)
        start = time.perf_counter()
        render_heads(head_params_from_z(z), world, intr, resolution, bg)
        if i:  # the first batch warms up
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--network", default="bundled:heads")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G, info = load_with_info(args.network)
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.n, G.cfg.z_dim, generator=gen)
    code = G.sample_bg_code(args.n, gen)
    cams = held_out_cameras(args.n, gen)
    try:
        from stylenerf_edit.invert.lpips import LPIPS

        lpips = LPIPS("vgg")
    except Exception as e:  # reported, not fatal: PSNR and SSIM need nothing extra
        print(f"# LPIPS unavailable: {e}")
        lpips = None
    rows = []
    with torch.no_grad():
        for i in range(0, args.n, args.batch):
            sl = slice(i, i + args.batch)
            world, intr = stack_cameras(cams[sl])
            fake = G.synthesize(G.mapping(z[sl]), (world, intr), code[sl]).img
            real = render_heads(head_params_from_z(z[sl]), world, intr, G.img_resolution,
                                background_from_code(code[sl])).image
            lp = lpips(fake, real) if lpips is not None else torch.full((len(fake),), float("nan"))
            for j, (p, s, l) in enumerate(zip(psnr(fake, real), ssim(fake, real), lp)):
                rows.append({"yaw": cams[i + j].yaw, "psnr": float(p), "ssim": float(s), "lpips": float(l)})

    def summary(sel: list[dict]) -> str:
        m = {k: sum(r[k] for r in sel) / len(sel) for k in ("psnr", "ssim", "lpips")}
        return f"{len(sel)} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['lpips']:.4f}"

    print(f"# {info.name} ({info.config.img_resolution} px, weights {info.weights_sha256[:12]}), held-out seed "
          f"{args.seed}, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    print("| yaw range | pairs | PSNR (dB) | SSIM | LPIPS (VGG) |")
    print("|---|---|---|---|---|")
    print(f"| all, \\|yaw\\| <= 30 | {summary(rows)} |")
    for lo, hi in ((0, 10), (10, 20), (20, 30)):
        sel = [r for r in rows if lo <= abs(r["yaw"]) < hi or (hi == 30 and abs(r["yaw"]) == 30)]
        if sel:
            print(f"| {lo}-{hi} deg | {summary(sel)} |")
    print(f"\n# procedural renderer: {renderer_speed():.0f} images/s at 64 px (batch 64, 2x2 anti-aliasing, "
          f"median of 5)")
    try:
        from stylenerf_edit.synthetic.predictor import AttributePredictor, evaluate, make_set

        model = AttributePredictor.from_pretrained()
        images, targets = make_set(2000, args.seed + 1)
        print("\n# attribute predictor, 2000 fresh held-out renders:")
        print(json.dumps(evaluate(model, images, targets).__dict__, indent=1))
    except Exception as e:
        print(f"# attribute predictor unavailable: {e}")


if __name__ == "__main__":
    main()
