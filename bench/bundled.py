"""Quality of the bundled model against the procedural world it was distilled from.

On N held-out (head, background, camera) triples — latents from a seed the training never used, cameras
from the StyleNeRF pose prior restricted to |yaw| <= 30 deg — renders G(z, camera, bg_code) and the exact
procedural target at the model's resolution and reports mean PSNR, SSIM and LPIPS (VGG), overall and per
yaw bin; for world 2 and later also PSNR over each part of the head (eyes, mouth, glasses, ...), pooled over
the part's pixels. Then the attribute predictor (``--predictor``, default the bundled one) reads the same
triples from the world's renders and from the model's: how much of each attribute the model's output still
shows. The predictor is a network trained on the same world (and the model's perceptual loss may use a sibling of
it), so the first ``--world-fit`` triples are also read without any network: smile, age and glasses are fitted by
re-rendering each head in the world with that parameter swept and the others true (``bench/directions.py``'s
``fit_attribute``), the value whose render is closest to the model's in pixel MSE being the model's. Last, the
model's render speed at batch 1 and the predictor's own held-out figures.

    python bench/bundled.py [--n 256] [--seed 2026] [--network bundled:heads] [--world 2] [--predictor DIR]
                            [--world-fit 96]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch
import torchvision

from stylenerf_edit.generator import load_with_info
from stylenerf_edit.generator.camera import CameraPrior, stack_cameras
from stylenerf_edit.metrics import psnr, ssim
from stylenerf_edit.synthetic.params import background_from_code, head_params_from_z
from stylenerf_edit.synthetic.distill import log_values, model_world, part_errors
from stylenerf_edit.synthetic.renderer import PARTS, render_heads


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


def attribute_readout(predictor: str | None, z: torch.Tensor, cams: list, fakes: torch.Tensor,
                      reals: torch.Tensor) -> None:
    """The predictor on the world's renders and on the model's renders of the same held-out triples."""
    from stylenerf_edit.synthetic.predictor import ANGLE_SCALE, AttributePredictor, score_predictions

    model = AttributePredictor.from_pretrained(predictor)
    p = head_params_from_z(z)
    angles = torch.tensor([[c.yaw, c.pitch] for c in cams]) / ANGLE_SCALE
    targets = torch.cat([torch.stack([p.smile, p.age, p.glasses, p.hair_color], 1), angles], 1)
    print("\n| predictor on | glasses accuracy | smile MAE | age MAE | hair colour MAE | yaw MAE (deg) | smile read = "
          "a * true + b |\n|---|---|---|---|---|---|---|")
    # blurred world renders: whether the predictor, rather than the model, limits the readout of soft renders
    blurred = torchvision.transforms.functional.gaussian_blur(reals, 9, 1.5)
    for name, images in (("world renders", reals), ("world renders blurred (sigma 1.5 px)", blurred),
                         ("model renders", fakes)):
        if images.shape[-1] != model.input_resolution:
            images = torch.nn.functional.interpolate(images, size=model.input_resolution, mode="area")
        pred = model.predict(images)
        e = score_predictions(pred, targets)
        a, b = torch.linalg.lstsq(torch.stack([p.smile, torch.ones_like(p.smile)], 1),
                                  pred["smile"][:, None]).solution[:, 0]
        print(f"| {name} | {e.glasses_accuracy:.3f} | {e.smile_mae:.3f} | {e.age_mae:.3f} | {e.hair_color_mae:.3f} | "
              f"{e.yaw_mae_deg:.2f} | a {a:.2f}, b {b:+.2f} |")


def world_fit_readout(z: torch.Tensor, cams: list, fakes: torch.Tensor, code: torch.Tensor, world: int) -> None:
    """Smile, age and glasses read off the model's renders by fitting the world (no predictor involved)."""
    from directions import attribute_grid, fit_attribute   # bench/directions.py, beside this script

    truth = head_params_from_z(z)
    world_mat, intr = stack_cameras(cams)
    print(f"\n| read by fitting the world ({len(z)} triples) | MAE | read = a * true + b |\n|---|---|---|")
    for attribute in ("smile", "age", "glasses"):
        fitted = fit_attribute(fakes[:, None], truth, attribute, attribute_grid(attribute), world_mat, intr,
                               background_from_code(code), world)[:, 0]
        true = getattr(truth, attribute).double().numpy()
        if attribute == "glasses":
            print(f"| glasses (accuracy) | {(fitted == true).mean():.3f} | |")
            continue
        a, b = np.polyfit(true, fitted, 1)
        print(f"| {attribute} | {np.abs(fitted - true).mean():.3f} | a {a:.2f}, b {b:+.2f} |")


def model_speed(G, repeats: int = 10) -> float:
    """Images per second at batch 1 through mapping and synthesis, median of ``repeats`` after a warm-up."""
    gen = torch.Generator().manual_seed(1)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            G(G.sample_z(1, gen), [CameraPrior().frontal()], G.sample_bg_code(1, gen))
            if i:
                times.append(time.perf_counter() - start)
    return 1 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--network", default="bundled:heads")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--world", type=int, default=None,
                        help="procedural world of the targets (default: the one the model's last stage learnt)")
    parser.add_argument("--predictor", default=None, help="attribute predictor directory (default: bundled)")
    parser.add_argument("--world-fit", type=int, default=96, help="triples also read by fitting the world (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G, info = load_with_info(args.network)
    world = args.world or model_world(info.extra.get("source", {}))
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
    rows, part_sums, fakes, reals = [], {}, [], []
    with torch.no_grad():
        for i in range(0, args.n, args.batch):
            sl = slice(i, i + args.batch)
            world_mat, intr = stack_cameras(cams[sl])
            fake = G.synthesize(G.mapping(z[sl]), (world_mat, intr), code[sl]).img
            target = render_heads(head_params_from_z(z[sl]), world_mat, intr, G.img_resolution,
                                  background_from_code(code[sl]), world=world, parts=world > 1)
            real = target.image
            fakes.append(fake.clamp(-1, 1))
            reals.append(real)
            if target.parts is not None:
                for k, v in part_errors(fake, real, target.parts).items():
                    part_sums[k] = part_sums.get(k, 0.0) + float(v)
            lp = lpips(fake, real) if lpips is not None else torch.full((len(fake),), float("nan"))
            for j, (p, s, l) in enumerate(zip(psnr(fake, real), ssim(fake, real), lp)):
                rows.append({"yaw": cams[i + j].yaw, "psnr": float(p), "ssim": float(s), "lpips": float(l)})

    def summary(sel: list[dict]) -> str:
        m = {k: sum(r[k] for r in sel) / len(sel) for k in ("psnr", "ssim", "lpips")}
        return f"{len(sel)} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['lpips']:.4f}"

    print(f"# {info.name} ({info.config.img_resolution} px, weights {info.weights_sha256[:12]}) against world "
          f"{world}, held-out seed {args.seed}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()}")
    print("| yaw range | pairs | PSNR (dB) | SSIM | LPIPS (VGG) |")
    print("|---|---|---|---|---|")
    print(f"| all, \\|yaw\\| <= 30 | {summary(rows)} |")
    for lo, hi in ((0, 10), (10, 20), (20, 30)):
        sel = [r for r in rows if lo <= abs(r["yaw"]) < hi or (hi == 30 and abs(r["yaw"]) == 30)]
        if sel:
            print(f"| {lo}-{hi} deg | {summary(sel)} |")
    if part_sums:
        parts = log_values(part_sums, 1)
        print("\n| part | PSNR (dB), pooled over the part's pixels |\n|---|---|")
        for name in PARTS[1:]:
            print(f"| {name} | {parts[f'psnr_{name}']:.2f} |")
    fakes = torch.cat(fakes)
    attribute_readout(args.predictor, z, cams, fakes, torch.cat(reals))
    if args.world_fit:
        k = min(args.world_fit, args.n)
        world_fit_readout(z[:k], cams[:k], fakes[:k], code[:k], world)
    print(f"\n# model: {model_speed(G):.1f} images/s at batch 1 ({G.img_resolution} px, {torch.get_num_threads()} "
          f"threads, median of 10)")
    print(f"# procedural renderer: {renderer_speed():.0f} images/s at 64 px (batch 64, 2x2 anti-aliasing, "
          f"median of 5)")
    try:
        from stylenerf_edit.synthetic.predictor import AttributePredictor, evaluate, make_set

        model = AttributePredictor.from_pretrained(args.predictor)
        images, targets = make_set(2000, args.seed + 1, resolution=model.input_resolution, world=world)
        print("\n# attribute predictor, 2000 fresh held-out renders:")
        print(json.dumps(evaluate(model, images, targets).__dict__, indent=1))
    except Exception as e:
        print(f"# attribute predictor unavailable: {e}")


if __name__ == "__main__":
    main()
