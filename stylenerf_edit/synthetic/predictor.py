"""Attribute predictor for the procedural head world: a small CNN trained on procedural renders.

Predicts smile, age, glasses (probability), hair colour, yaw and pitch (degrees) from an image of the
bundled model's world (``--world``: world 1, the default, or world 2, drawn for 128 px; ``--resolution``: the
renders it learns from and its input size, 64 by default or 128 with a stride-2 stem in front of the same
64-px body). It plays the role InterFaceGAN's CelebA attribute classifiers played: the labeler
that turns generator samples into attribute scores for learning edit directions.

    python -m stylenerf_edit.synthetic.predictor --out stylenerf_edit/synthetic/bundled/heads

trains it (about ten minutes on two CPU cores) and writes ``predictor.safetensors`` + ``predictor.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from stylenerf_edit.generator.camera import Camera, stack_cameras

from .params import NUM_HEAD_PARAMS, PARAM_RANGES, HeadParams
from .renderer import DEFAULT_WORLD, WORLD_VERSIONS, render_heads

ATTRIBUTES = ("smile", "age", "glasses", "hair_color", "yaw", "pitch")
INPUT_RESOLUTION = 64   # the body's input; larger inputs go through stride-2 stem layers first
STEM_WIDTH = 16
ANGLE_SCALE = 30.0  # degrees per unit of the network's angle outputs
WEIGHTS_NAME, CONFIG_NAME = "predictor.safetensors", "predictor.json"


class AttributePredictor(nn.Module):
    """[B, 3, H, W] images in [-1, 1] -> attribute scores (see :meth:`predict`)."""

    def __init__(self, width: int = 32, input_resolution: int = INPUT_RESOLUTION):
        super().__init__()
        res, cin = input_resolution, 3
        layers: list[nn.Module] = []
        while res > INPUT_RESOLUTION:  # a cheap learnt downsampler keeps detail that area pooling would blur
            layers += [nn.Conv2d(cin, STEM_WIDTH, 3, stride=2, padding=1), nn.BatchNorm2d(STEM_WIDTH), nn.ReLU(inplace=True)]
            res, cin = res // 2, STEM_WIDTH
        if res != INPUT_RESOLUTION:
            raise ValueError(f"input_resolution must be {INPUT_RESOLUTION} times a power of 2, got {input_resolution}")
        chans = [cin, width, 2 * width, 4 * width, 4 * width]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * 16, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, len(ATTRIBUTES)))
        self.width = width
        self.input_resolution = input_resolution

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw outputs [B, 6]: smile, age, glasses logit, hair colour, yaw/30, pitch/30."""
        return self.head(self.features(self._input(images)))

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, 3, S, S] at the input resolution S (area-resized when it differs)."""
        assert images.ndim == 4 and images.shape[1] == 3, f"expected [B, 3, H, W], got {tuple(images.shape)}"
        size = self.input_resolution
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="area")
        return images

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The activations that end each resolution of the body (and of each stem layer): [B, C_k, H_k, W_k],
        finest first."""
        x = self._input(images)
        layers = list(self.features)
        maps = []
        for i, layer in enumerate(layers):
            x = layer(x)
            after = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, nn.ReLU) and (after is None or after.stride == (2, 2)):
                maps.append(x)
        return maps

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Scores per image: smile [-1, 1], age [0, 1], glasses probability, hair_color [0, 1], yaw and pitch
        in degrees (the generator's camera convention)."""
        was_training = self.training
        self.eval()
        raw = torch.cat([self(images[i:i + batch_size].float()) for i in range(0, len(images), batch_size)])
        self.train(was_training)
        return decode(raw)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "AttributePredictor":
        """Load ``predictor.safetensors`` + ``predictor.json`` (default: the bundled heads predictor)."""
        from safetensors.torch import load_file

        from stylenerf_edit.errors import CheckpointError

        d = Path(directory) if directory is not None else bundled_dir()
        try:
            config = json.loads((d / CONFIG_NAME).read_text())
            model = cls(width=int(config["width"]),
                        input_resolution=int(config.get("input_resolution", INPUT_RESOLUTION)))
            model.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{d}: cannot load the attribute predictor ({type(e).__name__}: {e}); "
                                  "reinstall stylenerf-edit or retrain it with "
                                  "`python -m stylenerf_edit.synthetic.predictor`") from None
        return model.eval()


def bundled_dir() -> Path:
    return Path(__file__).resolve().parent / "bundled" / "heads"


def decode(raw: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"smile": raw[:, 0].clamp(-1, 1), "age": raw[:, 1].clamp(0, 1), "glasses": torch.sigmoid(raw[:, 2]),
            "hair_color": raw[:, 3].clamp(0, 1), "yaw": raw[:, 4] * ANGLE_SCALE, "pitch": raw[:, 5] * ANGLE_SCALE}


def feature_distance(model: AttributePredictor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image [B]: the squared difference of the predictor's channel-normalised activations, averaged over
    its resolutions (LPIPS's recipe without learnt weights). With a predictor trained on the world it is a
    perceptual distance tuned to what the world's attributes look like. ``a``, ``b``: [B, 3, H, W] in [-1, 1]."""
    assert a.shape == b.shape, f"{tuple(a.shape)} vs {tuple(b.shape)}"
    total = a.new_zeros(a.shape[0])
    maps_a, maps_b = model.feature_maps(a), model.feature_maps(b)
    for fa, fb in zip(maps_a, maps_b):
        fa = fa * (fa.square().sum(1, keepdim=True) + 1e-10).rsqrt()
        fb = fb * (fb.square().sum(1, keepdim=True) + 1e-10).rsqrt()
        total = total + (fa - fb).square().sum(1).mean((1, 2))
    return total / len(maps_a)


def random_heads(n: int, gen: torch.Generator) -> HeadParams:
    """Heads uniform over the documented ranges (glasses on for half), to cover the attribute space evenly."""
    u = torch.rand(n, NUM_HEAD_PARAMS, generator=gen)
    lo = torch.tensor([r[0] for r in PARAM_RANGES.values()])
    hi = torch.tensor([r[1] for r in PARAM_RANGES.values()])
    p = HeadParams.from_tensor(lo + (hi - lo) * u)
    p.glasses = (torch.rand(n, generator=gen) < 0.5).float()
    return p


def random_views(n: int, gen: torch.Generator, max_yaw: float = 45.0, max_pitch: float = 25.0) -> list[Camera]:
    """Cameras uniform in yaw and pitch, wider than the generator's prior, so poses it renders are covered."""
    yaw = (torch.rand(n, generator=gen) * 2 - 1) * max_yaw
    pitch = (torch.rand(n, generator=gen) * 2 - 1) * max_pitch
    return [Camera(yaw=float(a), pitch=float(b)) for a, b in zip(yaw, pitch)]


def make_set(n: int, seed: int, batch: int = 256, resolution: int = INPUT_RESOLUTION, world: int = DEFAULT_WORLD,
             supersample: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """n renders [n, 3, resolution, resolution] of ``world`` and their targets [n, 6] (raw-output units)."""
    gen = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        p = random_heads(m, gen)
        cams = random_views(m, gen)
        world_mat, intr = stack_cameras(cams)
        bg = torch.rand(m, 3, generator=gen) * 0.8 + 0.1
        images.append(render_heads(p, world_mat, intr, resolution, bg, supersample, world=world).image)
        angles = torch.tensor([[c.yaw, c.pitch] for c in cams]) / ANGLE_SCALE
        targets.append(torch.cat([torch.stack([p.smile, p.age, p.glasses, p.hair_color], 1), angles], 1))
    return torch.cat(images), torch.cat(targets)


def random_blur(images: torch.Tensor, fraction: float, gen: torch.Generator, max_sigma: float = 2.0) -> torch.Tensor:
    """Gaussian-blur a random ``fraction`` of the images, with one sigma in [0, max_sigma] pixels per call.

    A generator's renders are softer than the world's; a labeler that has only seen crisp renders reads them
    badly (at 128 px, a 64-px blur drops glasses accuracy to chance), so training mixes in blurred copies."""
    sigma = float(torch.rand((), generator=gen)) * max_sigma
    if sigma < 0.1:
        return images
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma) ** 2)
    taps = (taps / taps.sum()).to(images)
    c = images.shape[1]
    out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                   groups=c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                   groups=c)
    pick = (torch.rand(len(images), generator=gen) < fraction).to(images.device)
    return torch.where(pick[:, None, None, None], out, images)


def loss_fn(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    regress = [0, 1, 3, 4, 5]
    return F.mse_loss(raw[:, regress], target[:, regress]) + 0.2 * F.binary_cross_entropy_with_logits(raw[:, 2], target[:, 2])


@dataclass
class Evaluation:
    """Held-out errors: mean absolute error per continuous attribute, accuracy for glasses."""

    n: int
    smile_mae: float
    age_mae: float
    hair_color_mae: float
    yaw_mae_deg: float
    pitch_mae_deg: float
    glasses_accuracy: float


def evaluate(model: AttributePredictor, images: torch.Tensor, targets: torch.Tensor) -> Evaluation:
    return score_predictions(model.predict(images), targets)


def score_predictions(pred: dict[str, torch.Tensor], targets: torch.Tensor) -> Evaluation:
    """:class:`Evaluation` of :meth:`AttributePredictor.predict`'s output against ``targets`` [N, 6]."""
    t = targets
    return Evaluation(n=len(t), smile_mae=float((pred["smile"] - t[:, 0]).abs().mean()),
                      age_mae=float((pred["age"] - t[:, 1]).abs().mean()),
                      hair_color_mae=float((pred["hair_color"] - t[:, 3]).abs().mean()),
                      yaw_mae_deg=float((pred["yaw"] - t[:, 4] * ANGLE_SCALE).abs().mean()),
                      pitch_mae_deg=float((pred["pitch"] - t[:, 5] * ANGLE_SCALE).abs().mean()),
                      glasses_accuracy=float(((pred["glasses"] > 0.5).float() == t[:, 2]).float().mean()))


def train(out: Path, n_train: int = 16000, n_val: int = 2000, epochs: int = 8, seed: int = 0,
          threads: int = 2, device: str = "cpu", world: int = DEFAULT_WORLD, resolution: int = INPUT_RESOLUTION,
          train_supersample: int = 2, blur: float = 0.0) -> Evaluation:
    """Train on ``n_train`` fresh renders of ``world`` at ``resolution`` (``train_supersample`` rays per pixel
    side: 1 renders four times faster), with a ``blur`` fraction of each batch blurred (:func:`random_blur`),
    evaluate on ``n_val`` held-out renders with 2 x 2 anti-aliasing, write the weights and config into ``out``."""
    from safetensors.torch import save_file

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.time()
    x_train, y_train = make_set(n_train, seed, resolution=resolution, world=world, supersample=train_supersample)
    x_val, y_val = make_set(n_val, seed + 10_000, resolution=resolution, world=world)
    render_minutes = (time.time() - t0) / 60
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
    model = AttributePredictor(input_resolution=resolution).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(n_train / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed + 1)
    bar = tqdm(total=steps, desc="predictor", dynamic_ncols=True)
    for _ in range(epochs):
        order = torch.randperm(n_train, generator=gen)
        for i in range(0, n_train, 64):
            idx = order[i:i + 64].to(device)
            x, y = x_train[idx], y_train[idx].clone()
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)   # a mirrored head is the same head at -yaw
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y[:, 4] = torch.where(flip, -y[:, 4], y[:, 4])
            if blur > 0:
                x = random_blur(x, blur, gen)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    result = evaluate(model, x_val, y_val)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_NAME))
    (out / CONFIG_NAME).write_text(json.dumps({"width": model.width, "attributes": list(ATTRIBUTES),
                                               "input_resolution": resolution, "world": world,
                                               "train_supersample": train_supersample, "blur": blur,
                                               "train_images": n_train,
                                               "epochs": epochs, "seed": seed, "device": str(device),
                                               "threads": threads, "render_minutes": round(render_minutes, 1),
                                               "minutes": round((time.time() - t0) / 60, 1),
                                               "held_out": asdict(result)}, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=bundled_dir())
    parser.add_argument("--n-train", type=int, default=16000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--world", type=int, default=DEFAULT_WORLD, choices=WORLD_VERSIONS)
    parser.add_argument("--resolution", type=int, default=INPUT_RESOLUTION, help="render and input size (64 or 128)")
    parser.add_argument("--n-val", type=int, default=2000)
    parser.add_argument("--train-supersample", type=int, default=2, choices=(1, 2))
    parser.add_argument("--blur", type=float, default=0.0, help="fraction of each batch blurred (robust to model renders)")
    args = parser.parse_args()
    result = train(args.out, args.n_train, args.n_val, epochs=args.epochs, seed=args.seed, threads=args.threads,
                   device=args.device, world=args.world, resolution=args.resolution,
                   train_supersample=args.train_supersample, blur=args.blur)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
