"""Train the bundled model: a small StyleNeRF distilled from the procedural head world.

``G(z, camera, bg_code)`` is trained to reproduce ``render_heads(head_params_from_z(z), camera,
background_from_code(bg_code))``: a supervised regression with exact targets at cameras drawn from the
StyleNeRF pose prior. Besides the image, the NeRF's own low-resolution RGB and its opacity are supervised
by the (pooled) target image and coverage mask, which teaches the radiance field the true geometry early
and keeps the model view-consistent. World 2 also renders per-part coverage masks (eyes, mouth,
glasses, ...); ``--part-weights`` weights the image loss by them, so that it concentrates where the edits
live instead of on the background.

A training run is a sequence of stages. Each stage starts from the previous one's exported model (weights
only, the kind committed to the repository) and records its exact command, budget and resumes in the
exported ``config.json`` (``source.stages``), from which the model card is written:

    python -m stylenerf_edit.synthetic.distill --out runs/heads_v2 --init stylenerf_edit/synthetic/bundled/heads \\
        --resolution 128 --world 2 --minutes 110 --part-weights eyes=4,mouth=3,glasses=4 --trainset 32768
    python -m stylenerf_edit.synthetic.distill --out runs/heads_v2 --export stylenerf_edit/synthetic/bundled/heads

``--init`` takes an exported model directory or a run's ``checkpoint.pt``; tensors whose name and shape
match are copied (the mapping, the NeRF and the 64-px upsampler block of a 64-px model fit the 128-px
one), the others start fresh, a new last ToRGB at zero so the warm-started model begins as its own
upsampled output. On a GPU the same command with ``--device cuda --batch 64 --threads 8`` renders the
targets on the GPU; its export is a stage like any other.

A linear probe (discarded after training) reads the head coordinates of the normalised z back out of w.
Its loss makes W encode every attribute linearly, as InterFaceGAN's linear SVMs assume; without it the
mapping network, at StyleGAN's 0.01 learning-rate multiplier, passes the small-image attributes (smile,
glasses, eye size) to w only weakly and the synthesis renders an average face for them.

The run directory holds ``checkpoint.pt`` (rewritten atomically every few minutes and on SIGTERM/SIGINT;
a restart with the same ``--out`` resumes exactly: step, data position, random state, optimizer),
``log.csv`` and, with ``--trainset N``, a pre-rendered training set of N samples (see ``trainset.py``)
that a second process can render ahead of the trainer (``--render-set``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import pickle
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from stylenerf_edit.errors import CheckpointError, StyleNerfEditError, one_line
from stylenerf_edit.files import atomic_path
from stylenerf_edit.generator.camera import stack_cameras
from stylenerf_edit.generator.checkpoint import load_with_info, save_pretrained, weights_sha256
from stylenerf_edit.generator.mapping import normalize_2nd_moment
from stylenerf_edit.generator.network import Generator, GeneratorConfig
from stylenerf_edit.metrics import psnr

from .params import BACKGROUND_CODE_SCALE, NUM_HEAD_PARAMS, background_from_code, head_params_from_z
from .predictor import AttributePredictor, feature_distance
from .renderer import PARTS, WORLD_VERSIONS, render_heads
from .trainset import SetSpec, TrainingSet

TRAINER = "stylenerf_edit.synthetic.distill"
DOMAIN = "procedural heads"     # what an exported model draws (``source.domain``): the inversion warns on photos


class DistillError(StyleNerfEditError):
    """A training option or run directory is unusable."""


def bundled_config(resolution: int = 64, kernel_size: int = 1, nerf_resolution: int = 32) -> GeneratorConfig:
    """The bundled model: the FFHQ architecture family with smaller widths; z and w stay 512-d.

    64 px: one upsampler block (the first-generation model). 128 px: a second, narrower block on top; one
    CPU training step at batch 8 costs about 10 % more than at 64 px, the NeRF dominating both.
    ``kernel_size`` 3 gives the upsampler's convolutions a 3x3 neighbourhood: with FFHQ's 1x1 convolutions every
    4x4 output block at 128 px is drawn from one NeRF pixel and its 4-neighbours, too little to draw a pupil
    or a rim (the 1x1 model plateaus with a 32-px grid); the exact multi-view targets keep the 3x3 model
    view-consistent, the reason StyleNeRF kept 1x1 when trained as a GAN. ``nerf_resolution`` 64 renders the
    radiance field at 64 px (four times the rays) and keeps only the top upsampler block.
    """
    if resolution not in (64, 128):
        raise DistillError(f"--resolution {resolution}: the bundled model comes at 64 or 128 px")
    if kernel_size not in (1, 3):
        raise DistillError(f"--kernel-size {kernel_size}: the upsampler's convolutions are 1x1 or 3x3")
    if nerf_resolution not in (32, 64) or nerf_resolution >= resolution:
        raise DistillError(f"--nerf-resolution {nerf_resolution}: the radiance field renders at 32 or 64 px, "
                           f"below the {resolution}-px output")
    blocks = {64: [64], 128: [64, 48]}[resolution][-int(math.log2(resolution // nerf_resolution)):]
    return GeneratorConfig(img_resolution=resolution, mapping_layers=4, nerf_resolution=nerf_resolution,
                           feature_dim=64, fg_hidden=64, fg_layers=4, fg_freqs=8, bg_hidden=32, bg_layers=2,
                           bg_freqs=4, n_ray_samples=12, block_channels=blocks, kernel_size=kernel_size)


@dataclass
class TrainConfig:
    seed: int = 0
    batch: int = 8
    lr: float = 1e-3
    # Stored mapping weights are scaled by the 0.01 lr multiplier at run time, so this is 5e-4 effective: the
    # mapping must learn to pull the head coordinates out of z, which 0.01x the synthesis rate never does.
    mapping_lr: float = 0.05
    minutes: float = 110.0          # wall-clock budget of training steps (a safety stop when ``steps`` is set)
    steps: int = 0                  # step budget; 0: the schedule follows the wall-clock budget instead
    lowres_weight: float = 0.5      # NeRF RGB at 32 px vs the pooled target
    mask_weight: float = 0.5        # NeRF opacity vs the pooled coverage mask
    face_weight: float = 0.0        # extra image-loss weight on head pixels
    part_weights: str = ""          # image-loss weight per part of the world, e.g. "eyes=4,mouth=3" (others 1)
    probe_weight: float = 0.0       # linear readout of the head coordinates of z from w
    feature_weight: float = 0.0     # perceptual term: a world-trained predictor's features, model vs target
    feature_net: str = ""           # that predictor's directory (another than the one that scores the model)
    init: str = ""                  # start from this exported model directory or run checkpoint.pt
    clip: float = 1.0
    checkpoint_minutes: float = 3.0
    threads: int = 2
    resolution: int = 128           # 64 or 128 (see ``bundled_config``)
    kernel_size: int = 0            # the upsampler's convolutions, 1 (FFHQ) or 3; 0: as --init's model, else 1
    nerf_resolution: int = 0        # rays per side of the radiance field, 32 or 64; 0: as --init's, else 32
    world: int = 2                  # version of the procedural world that renders the targets
    trainset: int = 0               # pre-rendered training set size in samples; 0: render every batch
    chunk: int = 128                # samples per training-set file
    device: str = "cpu"
    log_every: int = 50             # steps per log.csv row (the row holds their means)


def parse_part_weights(spec: str) -> dict[str, float]:
    """``"eyes=4,mouth=3"`` -> {"eyes": 4.0, "mouth": 3.0}; names from :data:`renderer.PARTS`."""
    weights = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = item.partition("=")
        if name not in PARTS or not value:
            raise DistillError(f"--part-weights {spec!r}: expected NAME=WEIGHT items with NAME one of "
                               f"{', '.join(PARTS)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise DistillError(f"--part-weights {spec!r}: {value!r} is not a number") from None
        if weights[name] < 0:
            raise DistillError(f"--part-weights {spec!r}: weights must be >= 0")
    return weights


def render_targets(z: torch.Tensor, code: torch.Tensor, world_mat: torch.Tensor, camera_mat: torch.Tensor,
                   resolution: int, world: int) -> dict[str, torch.Tensor]:
    """The exact targets of (z, code, camera): image [-1, 1], coverage mask, per-part masks (world 2 on)."""
    if world not in WORLD_VERSIONS:
        raise DistillError(f"--world {world}: the procedural worlds are {', '.join(map(str, WORLD_VERSIONS))}")
    r = render_heads(head_params_from_z(z), world_mat, camera_mat, resolution, background_from_code(code),
                     world=world, parts=world > 1)
    return {"img": r.image, "mask": r.mask} | ({"parts": r.parts} if r.parts is not None else {})


def sample_inputs(cfg: GeneratorConfig, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Latents, background codes and prior cameras (on the CPU: the same draws on every device)."""
    z = torch.randn(n, cfg.z_dim, generator=gen)
    code = torch.randn(n, cfg.bg_code_dim, generator=gen) * BACKGROUND_CODE_SCALE
    world, intr = stack_cameras(cfg.camera.sample(n, gen))
    return z, code, world, intr


def sample_batch(G: Generator, n: int, gen: torch.Generator, world: int) -> dict[str, torch.Tensor]:
    """A freshly drawn batch with its targets, rendered on the generator's device."""
    z, code, world_mat, intr = (t.to(G.device) for t in sample_inputs(G.cfg, n, gen))
    return {"z": z, "code": code, "world": world_mat, "intr": intr,
            **render_targets(z, code, world_mat, intr, G.cfg.img_resolution, world)}


def pixel_weights(batch: dict[str, torch.Tensor], tc: TrainConfig) -> torch.Tensor:
    """[B, 1, R, R] image-loss weight: 1, plus ``face_weight`` on the head, plus ``w - 1`` per weighted part."""
    weight = 1 + tc.face_weight * batch["mask"]
    parts = parse_part_weights(tc.part_weights)
    if parts and "parts" not in batch:
        raise DistillError(f"--part-weights needs per-part masks, which world {tc.world} does not render")
    for name, w in parts.items():
        i = PARTS.index(name)
        weight = weight + (w - 1) * batch["parts"][:, i:i + 1]
    return weight


def part_errors(img: torch.Tensor, target: torch.Tensor, parts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per part: the coverage-weighted squared error (in [0, 1] units) and the covered pixels, summed over the
    batch: summed again over a log interval they give each part's PSNR (:func:`log_values`)."""
    se = (((img.clamp(-1, 1) - target) / 2) ** 2).mean(1, keepdim=True)
    out = {}
    for i, name in enumerate(PARTS[1:], start=1):
        cover = parts[:, i:i + 1]
        out[f"se_{name}"], out[f"px_{name}"] = (se * cover).sum(), cover.sum()
    return out


def log_values(sums: dict[str, float], n: int) -> dict[str, float]:
    """Interval sums -> the logged row: mean of every term, and PSNR per part pooled over its pixels (NaN
    when the interval held less than a pixel of it, e.g. no glasses)."""
    row = {k: v / n for k, v in sums.items() if not k.startswith(("se_", "px_"))}
    for k in sums:
        if k.startswith("se_"):
            name = k[3:]
            pixels = sums[f"px_{name}"]
            row[f"psnr_{name}"] = -10 * math.log10(max(sums[k] / pixels, 1e-12)) if pixels >= 1 else float("nan")
    return row


def losses(G: Generator, probe: torch.nn.Linear, batch: dict[str, torch.Tensor], tc: TrainConfig,
           features: AttributePredictor | None = None) -> dict[str, torch.Tensor]:
    ws = G.mapping(batch["z"])
    out = G.synthesis(ws, batch["world"], batch["intr"], batch["code"])
    err = out.img - batch["img"]
    weight = pixel_weights(batch, tc)
    image = ((err.abs() + 0.5 * err.square()) * weight).mean() / weight.mean()
    head_coords = normalize_2nd_moment(batch["z"])[:, :NUM_HEAD_PARAMS]
    readout = (probe(ws[:, 0]) - head_coords).square().mean()
    r = G.cfg.nerf_resolution
    pool = G.cfg.img_resolution // r
    low = (out.rgb_lr - F.avg_pool2d(batch["img"], pool)).abs().mean()
    opacity = (1 - out.rays.bg_lambda).reshape(-1, 1, r, r)
    mask = (opacity - F.avg_pool2d(batch["mask"], pool)).abs().mean()
    total = image + tc.lowres_weight * low + tc.mask_weight * mask + tc.probe_weight * readout
    terms = {"total": total, "image": image, "lowres": low, "mask": mask, "readout": readout}
    if features is not None:
        terms["features"] = feature_distance(features, out.img, batch["img"]).mean()
        terms["total"] = total + tc.feature_weight * terms["features"]
    with torch.no_grad():
        terms["psnr"] = psnr(out.img, batch["img"]).mean()
        if "parts" in batch:
            terms.update(part_errors(out.img, batch["img"], batch["parts"]))
    return terms


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
        # torch's message is a page of advice; the name after "GLOBAL" is what was refused.
        _, found, rest = str(error).partition("GLOBAL ")
        what = f"it references {rest.split()[0]}" if found and rest.split() else "it holds more than plain data"
        raise CheckpointError(f"{path}: refused, {what}, and a training checkpoint holds only tensors, dicts, lists "
                              "and numbers; only load training checkpoints written by this tool") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({one_line(error)[:160]})") from None
    if not isinstance(state, dict) or "G" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint of stylenerf_edit.synthetic.distill (no 'G' entry)")
    return state


def _stages_of_source(source: dict[str, Any]) -> list[dict[str, Any]]:
    """The stage list of an exported model's ``source``; first-generation exports nest one earlier stage."""
    if "stages" in source:
        return list(source["stages"])
    if not source:
        return []
    earlier = source.get("started_from")
    this = {k: v for k, v in source.items() if k != "started_from"}
    return ([earlier] if earlier else []) + [this]


def model_world(source: dict[str, Any]) -> int:
    """The procedural world version a model was distilled from: its last stage's (1 for first-generation exports)."""
    stages = _stages_of_source(source)
    return int(stages[-1].get("world", 1)) if stages else 1


def _stage_record(state: dict[str, Any]) -> dict[str, Any]:
    """What one stage was: its first command, settings, budget actually spent, world and every (re)start."""
    tc = state["train_config"]
    sessions = state.get("sessions", [])
    return {"trained_by": TRAINER, "command": sessions[0]["command"] if sessions else "",
            "steps": state["step"], "samples": state.get("samples", 0), "minutes": round(state["elapsed"] / 60, 1),
            "world": tc.get("world", 1), "resolution": state.get("generator", {}).get("img_resolution", 64),
            "init": tc.get("init", ""), "init_weights_sha256": state.get("init_weights_sha256", ""),
            "train_config": tc, "sessions": sessions}


def widen_kernel(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A 1x1 conv weight [O, I, 1, 1] placed at the centre of a zero [O, I, k, k] one when ``shape`` asks for
    that: the same function (demodulation norms are unchanged by zeros), so a 1x1 model warm-starts a 3x3
    one exactly. Any other weight is returned as it is."""
    if weight.ndim != 4 or len(shape) != 4 or tuple(weight.shape[:2]) != tuple(shape[:2]) \
            or weight.shape[2:] != (1, 1) or shape[2] != shape[3] or shape[2] % 2 == 0:
        return weight
    out = weight.new_zeros(shape)
    out[:, :, shape[2] // 2, shape[3] // 2] = weight[:, :, 0, 0]
    return out


@dataclass
class WarmStart:
    """What ``--init`` provided."""

    copied: list[str]
    fresh: list[str]
    history: list[dict[str, Any]]     # the stages that made the init model
    weights_sha256: str


def warm_start(G: Generator, probe: torch.nn.Linear, init: str | Path) -> WarmStart:
    """Copy every tensor of ``init`` (an exported model directory or a run checkpoint) whose name and shape
    match into G (and the probe, from a checkpoint); zero the ToRGB of upsampler blocks that start fresh."""
    path = Path(init)
    if not path.exists():
        raise DistillError(f"--init {init}: no such file or directory; pass an exported model directory "
                           "(config.json + model.safetensors) or a run's checkpoint.pt")
    probe_state: dict[str, torch.Tensor] = {}
    if path.is_dir():
        G0, info = load_with_info(path)
        weights, history, sha = G0.state_dict(), _stages_of_source(info.extra.get("source", {})), info.weights_sha256
    else:
        state = load_run_state(path)
        weights, probe_state = state["G"], state.get("probe", {})
        history = list(state.get("history", [])) + [_stage_record(state)]
        sha = weights_sha256(weights)
    own = G.state_dict()
    weights = {k: widen_kernel(v, own[k].shape) if k in own else v for k, v in weights.items()}
    fits = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not any(k.startswith("synthesis.") for k in fits):
        raise DistillError(f"--init {init}: no synthesis weights fit this generator "
                           f"({G.cfg.img_resolution} px); pass a bundled-family model or checkpoint")
    G.load_state_dict(fits, strict=False)
    fresh = sorted(set(own) - set(fits))
    with torch.no_grad():
        for name in G.synthesis.block_names:
            if any(k.startswith(f"synthesis.{name}.") for k in fresh):
                getattr(G.synthesis, name).torgb.weight.zero_()
        if probe_state and all(tuple(probe_state[k].shape) == tuple(v.shape) for k, v in probe.state_dict().items()):
            probe.load_state_dict(probe_state)
    return WarmStart(copied=sorted(fits), fresh=fresh, history=history, weights_sha256=sha)


def _architecture(tc: TrainConfig) -> tuple[int, int]:
    """Kernel size and NeRF resolution of a new run: as asked, else as the ``--init`` model's, else 1 and 32."""
    init: dict[str, Any] = {}
    if tc.init:
        path = Path(tc.init)
        try:
            init = json.loads((path / "config.json").read_text())["generator"] if path.is_dir() else \
                load_run_state(path)["generator"]
        except (OSError, KeyError, ValueError, TypeError):
            init = {}       # warm_start reports an unusable --init
    return (tc.kernel_size or int(init.get("kernel_size", 1)),
            tc.nerf_resolution or int(init.get("nerf_resolution", 32)))


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def open_training_set(out_dir: Path, tc: TrainConfig, cfg: GeneratorConfig) -> TrainingSet:
    """The run's pre-rendered set: samples drawn like :func:`sample_batch`'s, rendered on ``tc.device``."""
    spec = SetSpec(seed=tc.seed, size=tc.trainset, chunk=tc.chunk, resolution=cfg.img_resolution, world=tc.world)
    dev = torch.device(tc.device)

    def render(z: torch.Tensor, code: torch.Tensor, world_mat: torch.Tensor, intr: torch.Tensor) -> dict:
        return render_targets(z.to(dev), code.to(dev), world_mat.to(dev), intr.to(dev), cfg.img_resolution, tc.world)

    return TrainingSet(out_dir / "trainset", spec, lambda n, gen: sample_inputs(cfg, n, gen), render)


def _check(tc: TrainConfig) -> None:
    if tc.batch < 1 or tc.threads < 1 or tc.log_every < 1:
        raise DistillError("--batch, --threads and --log-every must be at least 1")
    if parse_part_weights(tc.part_weights) and tc.world == 1:
        raise DistillError("--part-weights needs per-part masks, which world 1 does not render; use --world 2")
    if tc.feature_weight > 0 and not tc.feature_net:
        raise DistillError("--feature-weight needs --feature-net, the directory of a world-trained predictor")
    if tc.device.startswith("cuda") and not torch.cuda.is_available():
        raise DistillError(f"--device {tc.device}: no CUDA GPU here; use --device cpu")


def train(out_dir: Path, tc: TrainConfig, command: str = "", stop: Callable[[int], bool] = lambda step: False,
          config: GeneratorConfig | None = None) -> Generator:
    """Train (or resume) the run in ``out_dir``.

    Args:
        command: the command line, recorded in the checkpoint and the exported model's stage history.
        stop: asked after every step; True ends the session early with a checkpoint (the signal handlers
            of :func:`main` use it).
        config: the generator of a new run; default ``bundled_config(tc.resolution)``.
    """
    _check(tc)
    torch.set_num_threads(tc.threads)
    device = torch.device(tc.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    state = load_run_state(ckpt_path) if ckpt_path.exists() else None
    cfg = (GeneratorConfig.from_dict(state["generator"]) if state
           else config or bundled_config(tc.resolution, *_architecture(tc)))
    if cfg.img_resolution != tc.resolution:
        raise DistillError(f"{ckpt_path}: this run trains a {cfg.img_resolution}-px model, not {tc.resolution} px; "
                           f"pass --resolution {cfg.img_resolution} or a new --out")
    torch.manual_seed(tc.seed)  # only the weight initialisation uses the global RNG
    G = Generator(cfg).train()
    probe = torch.nn.Linear(G.cfg.w_dim, NUM_HEAD_PARAMS)
    history: list[dict[str, Any]] = []
    init_sha = ""
    if tc.init and state is None:
        start = warm_start(G, probe, tc.init)
        history, init_sha = start.history, start.weights_sha256
        fresh_blocks = sorted({".".join(k.split(".")[:2]) for k in start.fresh})
        print(f"init from {tc.init}: {len(start.copied)} tensors copied, {len(start.fresh)} fresh "
              f"({', '.join(fresh_blocks) or 'none'})")
    G.to(device)
    probe.to(device)
    features = None
    if tc.feature_weight > 0:
        features = AttributePredictor.from_pretrained(tc.feature_net).to(device).requires_grad_(False)
    mapping_params = list(G.mapping.parameters())
    other = [p for n, p in G.named_parameters() if not n.startswith("mapping.")]
    opt = torch.optim.Adam([{"params": other, "lr": tc.lr}, {"params": mapping_params, "lr": tc.mapping_lr},
                            {"params": list(probe.parameters()), "lr": tc.lr}], betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(tc.seed + 1)
    step, samples, elapsed, sessions, sums = 0, 0, 0.0, [], {}
    if state:
        G.load_state_dict(state["G"])
        probe.load_state_dict(state["probe"])
        opt.load_state_dict(_reorder_optimizer_state(state, G))
        gen.set_state(state["rng"])
        step, samples, elapsed = state["step"], state["samples"], state["elapsed"]
        sessions, history, init_sha = list(state["sessions"]), list(state["history"]), state["init_weights_sha256"]
        sums = dict(state["log_sums"])
        print(f"resumed at step {step} ({elapsed / 60:.1f} min)")
    sessions.append({"command": command, "utc": _utc_now(), "at_step": step, "threads": tc.threads,
                     "device": str(device), "torch": str(torch.__version__)})
    dataset = open_training_set(out_dir, tc, G.cfg) if tc.trainset else None
    budget = tc.minutes * 60

    def progress() -> float:
        # A step budget makes the schedule immune to other load on the machine; time is the fallback.
        return step / tc.steps if tc.steps else elapsed / budget

    def save() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"G": G.state_dict(), "opt": opt.state_dict(), "rng": gen.get_state(), "step": step,
                        "samples": samples, "elapsed": elapsed, "train_config": asdict(tc),
                        "generator": G.cfg.to_dict(), "param_names": _param_names(G), "probe": probe.state_dict(),
                        "sessions": sessions, "history": history, "init_weights_sha256": init_sha,
                        "log_sums": sums}, tmp)

    log_path = out_dir / "log.csv"
    log_file = open(log_path, "a", newline="")
    log = csv.writer(log_file)
    last_ckpt, header_written = time.time(), log_path.stat().st_size > 0
    try:
        while progress() < 1 and elapsed < budget:
            t0 = time.time()
            factor = lr_factor(progress())
            for group, base in zip(opt.param_groups, (tc.lr, tc.mapping_lr, tc.lr)):
                group["lr"] = base * factor
            batch = dataset.batch(samples, tc.batch, device) if dataset else sample_batch(G, tc.batch, gen, tc.world)
            terms = losses(G, probe, batch, tc, features)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(G.parameters(), tc.clip)
            opt.step()
            step, samples = step + 1, samples + tc.batch
            elapsed += time.time() - t0
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if step % tc.log_every == 0:
                row = log_values(sums, tc.log_every)
                if not header_written:
                    log.writerow(["step", "minutes", "lr"] + list(row))
                    header_written = True
                log.writerow([step, f"{elapsed / 60:.2f}", f"{tc.lr * factor:.2e}"] + [f"{v:.5f}" for v in row.values()])
                log_file.flush()
                print(f"step {step} {elapsed / 60:.1f} min psnr {row['psnr']:.2f} loss {row['total']:.4f}", flush=True)
                sums = {}
            stopping = stop(step)
            if stopping or time.time() - last_ckpt > tc.checkpoint_minutes * 60 or progress() >= 1 or elapsed >= budget:
                save()
                last_ckpt = time.time()
            if stopping:
                print(f"stopped at step {step}; checkpoint written, rerun the same command to resume", flush=True)
                break
    finally:
        log_file.close()
    return G.eval()


def export(out_dir: Path, target: Path) -> Path:
    """Write the run's model (weights only, with its truncation centre) and its stage history to ``target``."""
    state = load_run_state(out_dir / "checkpoint.pt")
    G = Generator(GeneratorConfig.from_dict(state["generator"]))
    G.load_state_dict(state["G"])
    with torch.no_grad():  # truncation centre: the mean w of the final mapping network
        z = torch.randn(20000, G.cfg.z_dim, generator=torch.Generator().manual_seed(123))
        G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(0))
    stages = list(state["history"]) + [_stage_record(state)]
    return save_pretrained(G.eval(), target, source={"trained_by": TRAINER, "domain": DOMAIN, "stages": stages})


def render_set(out_dir: Path, tc: TrainConfig) -> None:
    """Render the run's training set ahead of its trainer (a second process; nothing else changes)."""
    _check(tc)
    if not tc.trainset:
        raise DistillError("--render-set needs --trainset N (the same as the trainer's)")
    torch.set_num_threads(tc.threads)
    dataset = open_training_set(out_dir, tc, bundled_config(tc.resolution))
    t0 = time.time()
    dataset.render_all(lambda i: print(f"chunk {i + 1}/{dataset.spec.chunks} {time.time() - t0:.0f} s", flush=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoint.pt, log.csv, trainset/)")
    parser.add_argument("--export", type=Path, default=None, help="write the trained model here and exit")
    parser.add_argument("--render-set", action="store_true", help="only render the run's --trainset, then exit")
    for field, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    try:
        if args.export:
            print(export(args.out, args.export))
            return
        tc = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
        if args.render_set:
            render_set(args.out, tc)
            return
        requested: list[int] = []

        def request_stop(signum: int, frame: object) -> None:
            requested.append(signum)

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        command = shlex.join(["python", "-m", TRAINER, *sys.argv[1:]])
        train(args.out, tc, command=command, stop=lambda step: bool(requested))
    except StyleNerfEditError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
