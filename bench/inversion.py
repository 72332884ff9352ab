"""Inversion on the procedural world: what pose estimation and NeRF gradients buy over the official projector.

N held-out procedural photos (256 px, ``stylenerf-edit synth`` with a seed the training never used, cameras
from the pose prior) go through the real pipeline (aligned input -> initial camera -> W+ optimisation) with
the bundled model. Reported per method, as medians over the photos (means in the JSON):

* input view: PSNR and LPIPS (VGG) of the reconstruction against the photo at the model's resolution;
* pose: |yaw| and |pitch| error of the final camera (and of the initial estimate) in degrees;
* novel views: PSNR and LPIPS of the latent rendered at yaw -25 and +25 degrees (the photo's pitch)
  against the exact procedural render of the same head there;
* seconds per photo (optimisation only, batches of ``--batch``).

Methods: ``ours`` (pose predictor + camera refinement, NeRF gradients, background fitted: the defaults),
``ours-fixed-camera`` (no refinement), ``ours-search`` (pose by search instead of the predictor, refined;
``ours-search-fixed-camera`` without refinement),
``true-camera`` (the exact camera given and kept: an upper bound), and ``official`` (the official projector:
frontal fixed camera, NeRF rows and background frozen, W+ only, same steps).

    python bench/inversion.py [--n 20] [--steps 300] [--methods ours,official] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from stylenerf_edit.generator import load_with_info
from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.invert.lpips import LPIPS
from stylenerf_edit.invert.optimize import InversionConfig, invert
from stylenerf_edit.invert.pipeline import estimate_cameras, prepare_photo
from stylenerf_edit.metrics import psnr
from stylenerf_edit.synthetic.dataset import synthesize
from stylenerf_edit.synthetic.params import HeadParams
from stylenerf_edit.synthetic.renderer import render_heads

METHODS = ("ours", "ours-fixed-camera", "ours-search", "ours-search-fixed-camera", "true-camera", "official")
NOVEL_YAWS = (-25.0, 25.0)


def method_setup(method: str, steps: int) -> tuple[InversionConfig, str]:
    """Optimisation config and initial-camera source of a method."""
    ours = InversionConfig(steps=steps)
    return {"ours": (ours, "predictor"), "ours-fixed-camera": (replace(ours, refine_camera=False), "predictor"),
            "ours-search": (ours, "search"), "ours-search-fixed-camera": (replace(ours, refine_camera=False), "search"),
            "true-camera": (replace(ours, refine_camera=False), "truth"),
            "official": (InversionConfig.official_baseline(steps), "frontal")}[method]


def true_views(truth: list[dict], yaw: float, resolution: int) -> torch.Tensor:
    """Exact procedural renders of the photos' heads at ``yaw`` (their own pitch)."""
    params = HeadParams(**{k: torch.tensor([t["params"][k] for t in truth]) for k in truth[0]["params"]})
    cams = [Camera(**t["camera"]).with_(yaw=yaw) for t in truth]
    world, intr = stack_cameras(cams)
    return render_heads(params, world, intr, resolution, torch.tensor([t["background"] for t in truth])).image


def run_method(G, network: str, lpips: LPIPS, photos: list, truth: list[dict], method: str, steps: int,
               batch: int) -> dict:
    config, init = method_setup(method, steps)
    rows = []
    for start in range(0, len(photos), batch):
        chunk, gt = photos[start:start + batch], truth[start:start + batch]
        if init == "truth":
            cams0 = [Camera(**t["camera"]) for t in gt]
        elif init == "frontal":
            cams0 = [G.camera_prior.frontal()] * len(chunk)
        else:
            cams0 = [c for c, _ in estimate_cameras(G, network, chunk, init, lpips)]
        t0 = time.perf_counter()
        results = invert(G, torch.stack([p.target for p in chunk]), cams0, lpips, config)
        seconds = (time.perf_counter() - t0) / len(chunk)
        ws = torch.stack([r.ws for r in results])
        bg = torch.stack([r.bg_code for r in results])
        novel = {}
        with torch.no_grad():
            for yaw in NOVEL_YAWS:
                img = G.synthesize(ws, [r.camera.with_(yaw=yaw) for r in results], bg).img
                target = true_views(gt, yaw, G.img_resolution)
                novel[yaw] = (psnr(img, target), lpips(img, target).reshape(-1))
        for k, (r, t, c0) in enumerate(zip(results, gt, cams0)):
            rows.append({"psnr": r.metrics["psnr"], "lpips": r.metrics["lpips"],
                         "yaw_err": abs(r.camera.yaw - t["camera"]["yaw"]),
                         "pitch_err": abs(r.camera.pitch - t["camera"]["pitch"]),
                         "init_yaw_err": abs(c0.yaw - t["camera"]["yaw"]),
                         "init_pitch_err": abs(c0.pitch - t["camera"]["pitch"]),
                         "novel_psnr": float(sum(novel[y][0][k] for y in NOVEL_YAWS) / len(NOVEL_YAWS)),
                         "novel_lpips": float(sum(novel[y][1][k] for y in NOVEL_YAWS) / len(NOVEL_YAWS)),
                         "seconds": seconds})
    keys = rows[0].keys()
    return {"median": {k: statistics.median(r[k] for r in rows) for k in keys},
            "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}, "photos": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=4242, help="synth seed of the held-out photos")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--network", default="bundled:heads")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    G, info = load_with_info(args.network)
    lpips = LPIPS("vgg")
    with tempfile.TemporaryDirectory() as d:
        synthesize(args.n, d, resolution=256, seed=args.seed)
        paths = sorted(Path(d).glob("*.png"))
        photos = [prepare_photo(p, G.img_resolution, aligned=True) for p in paths]
        truth = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
    print(f"{args.n} held-out procedural photos (synth seed {args.seed}), {args.steps} steps, {info.name} "
          f"({info.weights_sha256[:12]}), {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    header = ("method", "PSNR", "LPIPS", "yaw err", "pitch err", "init yaw err", "init pitch err", "novel PSNR",
              "novel LPIPS", "s/photo")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    report = {"n": args.n, "steps": args.steps, "seed": args.seed, "network": info.name,
              "weights_sha256": info.weights_sha256, "methods": {}}
    for method in methods:
        res = run_method(G, args.network, lpips, photos, truth, method, args.steps, args.batch)
        report["methods"][method] = res
        m = res["median"]
        print(f"| {method} | {m['psnr']:.2f} | {m['lpips']:.3f} | {m['yaw_err']:.2f} | {m['pitch_err']:.2f} | "
              f"{m['init_yaw_err']:.2f} | {m['init_pitch_err']:.2f} | {m['novel_psnr']:.2f} | "
              f"{m['novel_lpips']:.3f} | {m['seconds']:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
