"""Train the bundled model: a small StyleNeRF distilled from the procedural head world.

``G(z, camera, bg_code)`` is trained to reproduce ``render_heads(head_params_from_z(z), camera,
background_from_code(bg_code))``: a supervised regression with exact targets, rendered on the fly at
cameras drawn from the StyleNeRF pose prior. Besides the image, the NeRF's own low-resolution RGB and its
opacity are supervised by the (pooled) target image and coverage mask, which teaches the radiance field
the true geometry early and keeps the model view-consistent.

    python -m stylenerf_edit.synthetic.distill --out runs/heads --steps 16000 --minutes 110
    python -m stylenerf_edit.synthetic.distill --out runs/heads2 --init runs/heads/checkpoint.pt --steps 9000
    python -m stylenerf_edit.synthetic.distill --out runs/heads2 --export stylenerf_edit/synthetic/bundled/heads

A linear probe (discarded after training) reads the ten head coordinates of the normalised z back out of w.
Its loss makes W encode every attribute linearly, as InterFaceGAN's linear SVMs assume; without it the
mapping network, at StyleGAN's 0.01 learning-rate multiplier, passes the small-image attributes (smile,
glasses, eye size) to w only weakly and the synthesis renders an average face for them.

The run is resumable (``--out`` holds ``checkpoint.pt``, rewritten every few minutes, and ``log.csv``)
and seeded; ``--export`` writes the final weights in the native format.
"""

from __future__ import annotations

import argparse
import csv
import math
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from stylenerf_edit.errors import CheckpointError, one_line
from stylenerf_edit.generator.camera import stack_cameras
from stylenerf_edit.generator.checkpoint import save_pretrained
from stylenerf_edit.generator.network import Generator, GeneratorConfig
from stylenerf_edit.metrics import psnr

from stylenerf_edit.generator.mapping import normalize_2nd_moment

from .params import NUM_HEAD_PARAMS, background_from_code, head_params_from_z
from .renderer import render_heads


def bundled_config() -> GeneratorConfig:
    """The bundled model: the FFHQ architecture family at 64 px with smaller widths; z and w stay 512-d."""
    return GeneratorConfig(img_resolution=64, mapping_layers=4, nerf_resolution=32, feature_dim=64, fg_hidden=64,
                           fg_layers=4, fg_freqs=8, bg_hidden=32, bg_layers=2, bg_freqs=4, n_ray_samples=12,
                           block_channels=[64])


@dataclass
class TrainConfig:
    seed: int = 0
    batch: int = 8
    lr: float = 1e-3
    # Stored mapping weights are scaled by the 0.01 lr multiplier at run time, so this is 5e-4 effective: the
    # mapping must learn to pull the ten head coordinates out of z, which 0.01x the synthesis rate never does.
    mapping_lr: float = 0.05
    minutes: float = 110.0          # wall-clock budget (a safety stop when ``steps`` is set)
    steps: int = 0                  # step budget; 0: the schedule follows the wall-clock budget instead
    lowres_weight: float = 0.5      # NeRF RGB at 32 px vs the pooled target
    mask_weight: float = 0.5        # NeRF opacity vs the pooled coverage mask
    face_weight: float = 0.0        # extra image-loss weight on head pixels (small features: eyes, glasses rims)
    probe_weight: float = 0.0       # linear readout of the head coordinates of z from w
    init: str = ""                  # start from this run's checkpoint.pt weights (fresh optimizer and schedule)
    clip: float = 1.0
    checkpoint_minutes: float = 3.0
    threads: int = 2


def sample_batch(G: Generator, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Latents, background codes and prior cameras with their exact target renders."""
    z = torch.randn(n, G.cfg.z_dim, generator=gen)
    code = G.sample_bg_code(n, gen)
    world, intr = stack_cameras(G.camera_prior.sample(n, gen))
    target = render_heads(head_params_from_z(z), world, intr, G.cfg.img_resolution, background_from_code(code))
    return {"z": z, "code": code, "world": world, "intr": intr, "img": target.image, "mask": target.mask}


def losses(G: Generator, probe: torch.nn.Linear, batch: dict[str, torch.Tensor],
           tc: TrainConfig) -> dict[str, torch.Tensor]:
    ws = G.mapping(batch["z"])
    out = G.synthesis(ws, batch["world"], batch["intr"], batch["code"])
    err = out.img - batch["img"]
    weight = 1 + tc.face_weight * batch["mask"]
    image = ((err.abs() + 0.5 * err.square()) * weight).mean() / weight.mean()
    head_coords = normalize_2nd_moment(batch["z"])[:, :NUM_HEAD_PARAMS]
    readout = (probe(ws[:, 0]) - head_coords).square().mean()
    r = G.cfg.nerf_resolution
    pool = G.cfg.img_resolution // r
    low_target = F.avg_pool2d(batch["img"], pool)
    low = (out.rgb_lr - low_target).abs().mean()
    opacity = (1 - out.rays.bg_lambda).reshape(-1, 1, r, r)
    mask = (opacity - F.avg_pool2d(batch["mask"], pool)).abs().mean()
    total = image + tc.lowres_weight * low + tc.mask_weight * mask + tc.probe_weight * readout
    with torch.no_grad():
        quality = psnr(out.img, batch["img"]).mean()
    return {"total": total, "image": image, "lowres": low, "mask": mask, "readout": readout, "psnr": quality}


LOGGED = ("total", "image", "lowres", "mask", "readout", "psnr")


def lr_factor(progress: float) -> float:
    """Linear warm-up over the first 2 %, flat, then a cosine tail over the last 30 % of the budget."""
    if progress < 0.02:
        return progress / 0.02
    if progress < 0.7:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.7) / 0.3)))


def _param_names(G: Generator) -> list[str]:
    """Parameter names in optimizer order: synthesis, mapping, then the probe's."""
    names = [n for n, _ in G.named_parameters()]
    return ([n for n in names if not n.startswith("mapping.")] + [n for n in names if n.startswith("mapping.")]
            + ["probe.weight", "probe.bias"])


def _reorder_optimizer_state(state: dict, G: Generator) -> dict:
    """The saved optimizer state re-indexed by parameter name: optimizer state is stored by position, and a
    change in module creation order must not scramble it."""
    opt_state = state["opt"]
    old_index = {name: i for i, name in enumerate(state["param_names"])}
    mapping = [old_index[n] for n in _param_names(G)]
    reordered = {new: opt_state["state"][old] for new, old in enumerate(mapping) if old in opt_state["state"]}
    return {"state": reordered, "param_groups": opt_state["param_groups"]}


def load_run_state(path: str | Path) -> dict:
    """A training checkpoint, read without unpickling code: it holds only tensors, dicts, lists and numbers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training checkpoint there; pass the checkpoint.pt of a run directory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused, it holds more than plain tensors and numbers "
                              f"({one_line(error)[:160]}); only load training checkpoints written by this tool") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({one_line(error)[:160]})") from None
    if not isinstance(state, dict) or "G" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint of stylenerf_edit.synthetic.distill (no 'G' entry)")
    return state


def train(out_dir: Path, tc: TrainConfig) -> Generator:
    torch.set_num_threads(tc.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    torch.manual_seed(tc.seed)  # only the weight initialisation uses the global RNG
    G = Generator(bundled_config()).train()
    probe = torch.nn.Linear(G.cfg.w_dim, NUM_HEAD_PARAMS)
    if tc.init and not ckpt_path.exists():
        G.load_state_dict(load_run_state(tc.init)["G"])
    mapping_params = list(G.mapping.parameters())
    other = [p for n, p in G.named_parameters() if not n.startswith("mapping.")]
    opt = torch.optim.Adam([{"params": other, "lr": tc.lr}, {"params": mapping_params, "lr": tc.mapping_lr},
                            {"params": list(probe.parameters()), "lr": tc.lr}], betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(tc.seed + 1)
    step, elapsed = 0, 0.0
    if ckpt_path.exists():
        state = load_run_state(ckpt_path)
        G.load_state_dict(state["G"])
        probe.load_state_dict(state["probe"])
        opt.load_state_dict(_reorder_optimizer_state(state, G))
        gen.set_state(state["rng"])
        step, elapsed = state["step"], state["elapsed"]
        print(f"resumed at step {step} ({elapsed / 60:.1f} min)")
    log_new = not (out_dir / "log.csv").exists()
    log_file = open(out_dir / "log.csv", "a", newline="")
    log = csv.writer(log_file)
    if log_new:
        log.writerow(["step", "minutes", "lr"] + list(LOGGED))
    budget = tc.minutes * 60

    def progress() -> float:
        # A step budget makes the schedule immune to other load on the machine; time is the fallback.
        return step / tc.steps if tc.steps else elapsed / budget

    last_ckpt = time.time()
    bar = tqdm(total=tc.steps or int(budget), initial=step if tc.steps else int(elapsed),
               unit="step" if tc.steps else "s", desc="distilling", dynamic_ncols=True)
    running = {}
    while progress() < 1 and elapsed < budget:
        t0 = time.time()
        factor = lr_factor(progress())
        for group, base in zip(opt.param_groups, (tc.lr, tc.mapping_lr, tc.lr)):
            group["lr"] = base * factor
        batch = sample_batch(G, tc.batch, gen)
        terms = losses(G, probe, batch, tc)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(G.parameters(), tc.clip)
        opt.step()
        step += 1
        dt = time.time() - t0
        elapsed += dt
        bar.update((step if tc.steps else int(elapsed)) - bar.n)
        for k, v in terms.items():
            running[k] = 0.98 * running.get(k, float(v.detach())) + 0.02 * float(v.detach())
        bar.set_postfix(step=step, psnr=f"{running['psnr']:.2f}", loss=f"{running['total']:.4f}")
        if step % 50 == 0:
            log.writerow([step, f"{elapsed / 60:.2f}", f"{tc.lr * factor:.2e}"] + [f"{running[k]:.5f}" for k in LOGGED])
            log_file.flush()
        if time.time() - last_ckpt > tc.checkpoint_minutes * 60 or progress() >= 1 or elapsed >= budget:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"G": G.state_dict(), "opt": opt.state_dict(), "rng": gen.get_state(), "step": step,
                        "elapsed": elapsed, "train_config": asdict(tc), "param_names": _param_names(G),
                        "probe": probe.state_dict()}, tmp)
            tmp.replace(ckpt_path)
            last_ckpt = time.time()
    bar.close()
    log_file.close()
    return G.eval()


def export(out_dir: Path, target: Path) -> Path:
    state = load_run_state(out_dir / "checkpoint.pt")
    G = Generator(bundled_config())
    G.load_state_dict(state["G"])
    with torch.no_grad():  # truncation centre: the mean w of the final mapping network
        z = torch.randn(20000, G.cfg.z_dim, generator=torch.Generator().manual_seed(123))
        G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(0))
    source = {"trained_by": "stylenerf_edit.synthetic.distill", "steps": state["step"],
              "minutes": round(state["elapsed"] / 60, 1), "train_config": state["train_config"]}
    init = state["train_config"].get("init")
    if init:   # a continued run: record the run it started from as well
        first = load_run_state(init)
        source["started_from"] = {"steps": first["step"], "minutes": round(first["elapsed"] / 60, 1),
                                  "train_config": first["train_config"]}
    return save_pretrained(G.eval(), target, source=source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoint.pt, log.csv)")
    parser.add_argument("--export", type=Path, default=None, help="write the trained model here and exit")
    for field, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    if args.export:
        print(export(args.out, args.export))
        return
    tc = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
    train(args.out, tc)


if __name__ == "__main__":
    main()
