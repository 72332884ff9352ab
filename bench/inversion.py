"""Inversion on the procedural world: what pose estimation and NeRF gradients each buy, and the official settings.

N held-out procedural photos (256 px, ``stylenerf-edit synth`` with a seed the training never used, cameras
from the pose prior) go through the real pipeline (aligned input -> initial camera -> W+ optimisation) with
the bundled model. Reported per arm, as medians over the photos (means in the JSON):

* input view: PSNR and LPIPS (VGG) of the final reconstruction against the photo at the model's resolution
  (LPIPS recomputed here for every arm, whatever loss the arm optimised);
* pose: |yaw| and |pitch| error of the final camera (and of the initial camera) in degrees;
* novel views: PSNR and LPIPS of the latent rendered at yaw -25 and +25 degrees with the arm's final pitch,
  against the exact procedural render of the same head at yaw -25 and +25 degrees and the photo's true pitch
  (so a pitch error costs novel-view quality too);
* seconds per photo (optimisation only, batches of ``--batch``).

Arms (all but the last use this project's optimiser, loss and schedule, ``--steps`` steps):

* ``ours``: pose predictor, camera refined, NeRF gradients, background code fitted (the defaults);
* ``ours-coarse``: the same with half the steps coarse to fine (``--coarse-fraction 0.5``: what it costs);
* ``ours-fixed-camera``: the same without camera refinement;
* ``ours-search``: pose by the model-agnostic search instead of the predictor (which was trained on the same
  procedural world), refined; ``ours-search-fixed-camera`` without refinement;
* ``true-camera``: the exact camera given and kept (an upper bound for the pose);
* ``predictor-frozen-nerf``: the predictor's camera, kept, NeRF rows and background code frozen (only the
  upsampler rows of W+ move). Against ``ours-fixed-camera`` this isolates the gain from NeRF gradients
  (which also reach the background code); against ``frontal-frozen-nerf`` the gain from pose estimation;
* ``frontal-frozen-nerf``: the frontal camera, kept, NeRF rows and background code frozen — the constraints
  of the official inversion with this project's optimiser;
* ``official-settings``: the official ``apps/inversion.py`` settings, through this project's optimiser
  (``--official-steps``, default its 1000): W+ started from the mean of 10,000 mapped z
  (``RandomState(123)``), Adam at a constant learning rate 0.01, loss = MSE of the [0, 1] images plus the
  sum over VGG16 relu1_1, relu1_2, relu3_2 and relu4_2 of the feature MSE (ImageNet weights, [0, 1] inputs
  without normalisation, area-resized to 256 px), both weights 1; its camera (the "pigan" trajectory at
  t = 0: yaw 0, polar pi/2 + 0.2, i.e. pitch -11.5 degrees) and a random background code (0.65 N(0, 1),
  torch seed 303) kept fixed, since in its eval mode no gradient reaches the NeRF rows or the background;
* ``ours+pti``: ``ours``, then pivotal tuning around each latent (``invert.pti``, default settings); every
  figure is the tuned generator's, and the time includes the tuning;
* ``ours+pti-naive``: the same without the multi-view regulariser (what it buys for the other views);
* ``ours+pti-no-edit-term``: the same without the edit regulariser (what it buys for edits).

The PTI arms tune the latents ``ours`` found (one W+ run serves them all: it is deterministic); their seconds
are the W+ time plus the tuning.

For the PTI arms also the edits: each shipped direction at strength +2 on every latent, rendered at the
photo's camera by the base and by the tuned generator, read by the bundled attribute predictor; ``edit_kept``
is the tuned generator's change over the base generator's (1.0: the edit does on the tuned generator exactly
what it does untuned), per attribute (median over the photos) and as their median.

    python bench/inversion.py [--n 20] [--steps 300] [--official-steps 1000] [--methods ours,frontal-frozen-nerf]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stylenerf_edit.generator import load_with_info
from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.invert.lpips import LPIPS
from stylenerf_edit.invert.optimize import InversionConfig, invert, lpips_input
from stylenerf_edit.invert.pipeline import estimate_cameras, prepare_photo
from stylenerf_edit.invert.pti import TuningConfig, apply_tuning, tune
from stylenerf_edit.metrics import psnr
from stylenerf_edit.synthetic.dataset import synthesize
from stylenerf_edit.synthetic.params import HeadParams
from stylenerf_edit.synthetic.renderer import render_heads

METHODS = ("ours", "ours-coarse", "ours-fixed-camera", "ours-search", "ours-search-fixed-camera", "true-camera",
           "predictor-frozen-nerf", "frontal-frozen-nerf", "official-settings", "ours+pti", "ours+pti-naive",
           "ours+pti-no-edit-term")
NOVEL_YAWS = (-25.0, 25.0)

# apps/inversion.py (facebookresearch/StyleNeRF, commit 7f5610a)
OFFICIAL_STEPS = 1000
OFFICIAL_LR = 0.01
OFFICIAL_W_SAMPLES, OFFICIAL_W_SEED = 10_000, 123
OFFICIAL_TORCH_SEED = 303
OFFICIAL_POLAR = math.pi / 2 + 0.2
OFFICIAL_VGG_CUTS = (2, 4, 14, 21)   # torchvision vgg16.features split points: relu1_1, relu1_2, relu3_2, relu4_2
OFFICIAL_VGG_RESOLUTION = 256


class OfficialFeatureLoss(torch.nn.Module):
    """The official inversion's perceptual term, per image: sum over four VGG16 layers of the feature MSE.

    Images in [-1, 1] are mapped to [0, 1] (no ImageNet normalisation) and area-resized to 256 px. The VGG16
    layers are those of the LPIPS trunk (torchvision's ImageNet weights, the ones the official script loads).
    """

    def __init__(self, lpips: LPIPS) -> None:
        super().__init__()
        # lpips keeps torchvision's feature index as each layer's name inside its slices.
        trunk = lpips.model.net
        layers = {int(name): module for k in range(1, trunk.N_slices + 1)
                  for name, module in getattr(trunk, f"slice{k}").named_children()}
        bounds = (0,) + OFFICIAL_VGG_CUTS
        self.slices = torch.nn.ModuleList(torch.nn.Sequential(*(layers[i] for i in range(a, b)))
                                          for a, b in zip(bounds, bounds[1:]))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate((images + 1) / 2, size=(OFFICIAL_VGG_RESOLUTION,) * 2, mode="area")
        out = []
        for block in self.slices:
            x = block(x)
            out.append(x)
        return out

    def distance(self, x: torch.Tensor, y_features: list[torch.Tensor]) -> torch.Tensor:
        """Per image [B]; the optimiser computes each photo's features once (``features``), as officially."""
        return sum((a - b).square().mean(dim=(1, 2, 3)) for a, b in zip(self.features(x), y_features))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(x, self.features(y))


@dataclass(frozen=True)
class Arm:
    """How one arm starts and what it optimises."""

    config: InversionConfig
    camera: str                  # predictor | search | truth | frontal | official
    official_start: bool = False  # official W+ start, background code and feature loss
    pti: TuningConfig | None = None   # pivotal tuning after the inversion (figures of the tuned generator)


def official_settings(steps: int) -> InversionConfig:
    """apps/inversion.py's optimiser: Adam at a constant lr 0.01, MSE on [0, 1] images (1/4 of the MSE on
    [-1, 1]) + feature loss, both weight 1; eval mode, so camera fixed, NeRF rows and background frozen."""
    return InversionConfig(steps=steps, w_lr=OFFICIAL_LR, warmup=0.0, rampdown=0.0, lpips_weight=1.0,
                           mse_weight=0.25, refine_camera=False, fit_background=False, nerf_grad=False)


def arm(method: str, steps: int, official_steps: int) -> Arm:
    ours = InversionConfig(steps=steps)
    return {"ours": Arm(ours, "predictor"),
            "ours-coarse": Arm(replace(ours, coarse_fraction=0.5), "predictor"),
            "ours-fixed-camera": Arm(replace(ours, refine_camera=False), "predictor"),
            "ours-search": Arm(ours, "search"),
            "ours-search-fixed-camera": Arm(replace(ours, refine_camera=False), "search"),
            "true-camera": Arm(replace(ours, refine_camera=False), "truth"),
            "predictor-frozen-nerf": Arm(InversionConfig.frozen_nerf(steps), "predictor"),
            "frontal-frozen-nerf": Arm(InversionConfig.frozen_nerf(steps), "frontal"),
            "official-settings": Arm(official_settings(official_steps), "official", official_start=True),
            "ours+pti": Arm(ours, "predictor", pti=TuningConfig()),
            "ours+pti-naive": Arm(ours, "predictor", pti=TuningConfig(multiview_weight=0.0)),
            "ours+pti-no-edit-term": Arm(ours, "predictor", pti=TuningConfig(edit_weight=0.0))}[method]


def official_start(G: Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W+ [n, num_ws, w_dim] = mean of 10,000 mapped z (RandomState(123)) and the background code [n, dim]
    drawn after seeding torch with 303 (the same for every photo: the official script inverts one per run)."""
    z = torch.from_numpy(np.random.RandomState(OFFICIAL_W_SEED).randn(OFFICIAL_W_SAMPLES, G.cfg.z_dim))
    with torch.no_grad():
        total = sum(G.mapping(chunk.float().to(G.device)).sum(0) for chunk in z.split(1000))
    ws = (total / OFFICIAL_W_SAMPLES).expand(n, -1, -1)
    bg = G.sample_bg_code(1, torch.Generator().manual_seed(OFFICIAL_TORCH_SEED)).expand(n, -1)
    return ws, bg


def true_views(truth: list[dict], yaw: float, resolution: int) -> torch.Tensor:
    """Exact procedural renders of the photos' heads at ``yaw`` (their own pitch)."""
    params = HeadParams(**{k: torch.tensor([t["params"][k] for t in truth]) for k in truth[0]["params"]})
    cams = [Camera(**t["camera"]).with_(yaw=yaw) for t in truth]
    world_mat, intr = stack_cameras(cams)
    worlds = {t.get("world", 1) for t in truth}
    assert len(worlds) == 1, f"photos from several procedural worlds: {worlds}"
    return render_heads(params, world_mat, intr, resolution, torch.tensor([t["background"] for t in truth]),
                        world=worlds.pop()).image


def initial_cameras(G: Generator, network: str, lpips: LPIPS, chunk: list, gt: list[dict], source: str) -> list[Camera]:
    if source == "truth":
        return [Camera(**t["camera"]) for t in gt]
    if source == "frontal":
        return [G.camera_prior.frontal()] * len(chunk)
    if source == "official":
        prior = G.camera_prior
        return [Camera.from_polar(0.0, OFFICIAL_POLAR, radius=prior.mean_radius, fov=prior.fov)] * len(chunk)
    return [c for c, _ in estimate_cameras(G, network, chunk, source, lpips)]


EDIT_STRENGTH = 2.0


def edit_kept(G: Generator, models: list[Generator], results: list, network: str) -> list[dict[str, float]]:
    """Per photo: for each shipped direction, the predictor's change under an edit of ``EDIT_STRENGTH`` rendered
    by the photo's tuned generator over the same change rendered by the base generator."""
    from stylenerf_edit.directions.library import available_directions
    from stylenerf_edit.directions.direction import load_direction
    from stylenerf_edit.editing.edit import Edit, apply_edits
    from stylenerf_edit.synthetic.predictor import AttributePredictor

    predictor = AttributePredictor.from_pretrained()
    directions = {a: load_direction(f) for a, f in sorted(available_directions(network).items())}
    rows = []
    with torch.no_grad():
        for model, r in zip(models, results):
            row = {}
            for a, d in directions.items():
                ws = torch.stack([r.ws, apply_edits(r.ws, [Edit(d, EDIT_STRENGTH)])])
                change = {}
                for name, gen in (("base", G), ("tuned", model)):
                    img = gen.synthesize(ws, [r.camera] * 2, r.bg_code[None].expand(2, -1)).img
                    score = predictor.predict(img)[a]
                    change[name] = float(score[1] - score[0])
                row[f"edit_kept_{a}"] = change["tuned"] / change["base"] if abs(change["base"]) > 1e-6 else 1.0
            row["edit_kept"] = statistics.median(row.values()) if row else 1.0
            rows.append(row)
    return rows


def run_method(G: Generator, network: str, lpips: LPIPS, photos: list, truth: list[dict], setup: Arm,
               batch: int, inverted: dict) -> dict:
    """One arm's figures; ``inverted`` keeps the W+ results of every (camera, settings, chunk) already run."""
    rows = []
    for start in range(0, len(photos), batch):
        chunk, gt = photos[start:start + batch], truth[start:start + batch]
        targets = torch.stack([p.target for p in chunk])
        key = (setup.camera, repr(setup.config), setup.official_start, start)
        if key not in inverted:      # the PTI arms start from ``ours``' latents: the optimisation is deterministic
            loss = OfficialFeatureLoss(lpips) if setup.official_start else lpips   # one target cache per chunk
            cams0 = initial_cameras(G, network, lpips, chunk, gt, setup.camera)
            init_ws, init_bg = official_start(G, len(chunk)) if setup.official_start else (None, None)
            t0 = time.perf_counter()
            results = invert(G, targets, cams0, loss, setup.config, init_ws=init_ws, init_bg_code=init_bg)
            inverted[key] = (cams0, results, time.perf_counter() - t0)
        cams0, results, invert_seconds = inverted[key]
        # Each photo is rendered by its own generator: the base one, or the base one tuned around its latent.
        t0 = time.perf_counter()
        models = [G] * len(results)
        if setup.pti is not None:
            models = [apply_tuning(G, tune(G, r.ws, r.camera, r.bg_code, p.target, lpips, "base", setup.pti), "base")
                      for r, p in zip(results, chunk)]
        seconds = (invert_seconds + time.perf_counter() - t0) / len(chunk)
        images, novel_images = [], {yaw: [] for yaw in NOVEL_YAWS}
        with torch.no_grad():
            for model, r in zip(models, results):
                images.append(model.synthesize(r.ws[None], [r.camera], r.bg_code[None]).img)
                for yaw in NOVEL_YAWS:
                    novel_images[yaw].append(model.synthesize(r.ws[None], [r.camera.with_(yaw=yaw)], r.bg_code[None]).img)
            images = torch.cat(images)
            input_psnr = psnr(images, targets.to(G.device))
            input_lpips = lpips(lpips_input(images), lpips_input(targets.to(G.device))).reshape(-1)
            novel = {}
            for yaw in NOVEL_YAWS:
                img, target = torch.cat(novel_images[yaw]), true_views(gt, yaw, G.img_resolution)
                novel[yaw] = (psnr(img, target), lpips(img, target).reshape(-1))
        kept = edit_kept(G, models, results, network) if setup.pti is not None else [{}] * len(results)
        for k, (r, t, c0) in enumerate(zip(results, gt, cams0)):
            rows.append({"psnr": float(input_psnr[k]), "lpips": float(input_lpips[k]),
                         "yaw_err": abs(r.camera.yaw - t["camera"]["yaw"]),
                         "pitch_err": abs(r.camera.pitch - t["camera"]["pitch"]),
                         "init_yaw_err": abs(c0.yaw - t["camera"]["yaw"]),
                         "init_pitch_err": abs(c0.pitch - t["camera"]["pitch"]),
                         "novel_psnr": float(sum(novel[y][0][k] for y in NOVEL_YAWS) / len(NOVEL_YAWS)),
                         "novel_lpips": float(sum(novel[y][1][k] for y in NOVEL_YAWS) / len(NOVEL_YAWS)),
                         "seconds": seconds, **kept[k]})
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {"setup": {"config": asdict(setup.config), "camera": setup.camera,
                      "official_start": setup.official_start, "pti": asdict(setup.pti) if setup.pti else None},
            "median": {k: statistics.median(r[k] for r in rows) for k in keys},
            "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}, "photos": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--official-steps", type=int, default=OFFICIAL_STEPS,
                        help="steps of the official-settings arm (apps/inversion.py's default)")
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
    print(f"{args.n} held-out procedural photos (synth seed {args.seed}), {args.steps} steps "
          f"(official-settings: {args.official_steps}), {info.name} ({info.weights_sha256[:12]}), "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    header = ("method", "PSNR", "LPIPS", "yaw err", "pitch err", "init yaw err", "init pitch err", "novel PSNR",
              "novel LPIPS", "s/photo")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    report = {"n": args.n, "steps": args.steps, "official_steps": args.official_steps, "seed": args.seed,
              "network": info.name, "weights_sha256": info.weights_sha256, "methods": {}}
    inverted: dict = {}
    for method in methods:
        res = run_method(G, args.network, lpips, photos, truth, arm(method, args.steps, args.official_steps),
                         args.batch, inverted)
        report["methods"][method] = res
        m = res["median"]
        print(f"| {method} | {m['psnr']:.2f} | {m['lpips']:.3f} | {m['yaw_err']:.2f} | {m['pitch_err']:.2f} | "
              f"{m['init_yaw_err']:.2f} | {m['init_pitch_err']:.2f} | {m['novel_psnr']:.2f} | "
              f"{m['novel_lpips']:.3f} | {m['seconds']:.1f} |", flush=True)
    for method, res in report["methods"].items():
        kept = {k.removeprefix("edit_kept_"): v for k, v in res["median"].items() if k.startswith("edit_kept_")}
        if kept:
            print(f"{method}: edits kept on the tuned generator (median over photos, strength {EDIT_STRENGTH:+g}): "
                  + ", ".join(f"{a} {v:.2f}" for a, v in kept.items()) + f"; median {res['median']['edit_kept']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
