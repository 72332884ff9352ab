"""Edit directions on the bundled model, measured with the bundled attribute predictor.

For each direction set (a folder of ``<attribute>.npz``, default: the shipped ones) and each attribute:

* the SVM's own figures from training: validation accuracy on the held-out split of the extremes, accuracy
  on the unselected middle samples, correlation of signed distance and score;
* on N held-out latents (a seed the directions never saw, truncation 0.7, frontal camera): the predictor's
  score change per unit of edit strength (least-squares slope over strengths -2..+2);
* the change of every other attribute at strength +-2, as a fraction of that attribute's range (smile 2,
  the others 1), the worst one reported;
* yaw drift: mean |predicted yaw change| in degrees at strength +-2;
* view consistency: the target score change at strength +2 seen at yaw -20, 0, +20 (mean of each).

    python bench/directions.py [--directions DIR ...] [--n 64] [--seed 12345]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

from stylenerf_edit.directions.library import available_directions
from stylenerf_edit.directions.svm import load_direction
from stylenerf_edit.editing.edit import Edit, apply_edits
from stylenerf_edit.generator import load_with_info
from stylenerf_edit.synthetic.predictor import AttributePredictor

RANGES = {"smile": 2.0, "age": 1.0, "glasses": 1.0, "hair_color": 1.0}
STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)
VIEW_YAWS = (-20.0, 0.0, 20.0)


def scores(G, predictor, ws, bg, yaw: float = 0.0) -> dict[str, np.ndarray]:
    cams = [G.camera_prior.frontal().with_(yaw=yaw)] * len(ws)
    with torch.no_grad():
        img = G.synthesize(ws, cams, bg).img
    return {k: v.numpy() for k, v in predictor.predict(img).items()}


def measure(G, predictor, direction, ws, bg) -> dict[str, float]:
    a = direction.attribute
    by_strength = {s: scores(G, predictor, apply_edits(ws, [Edit(direction, s)]), bg) for s in STRENGTHS}
    x = np.repeat(STRENGTHS, len(ws))
    y = np.concatenate([by_strength[s][a] for s in STRENGTHS])
    slope = float(np.polyfit(x, y, 1)[0])
    others = {o: float(np.mean(np.abs(by_strength[2.0][o] - by_strength[-2.0][o]))) / 2 / RANGES[o]
              for o in RANGES if o != a}
    worst = max(others, key=others.get)
    yaw_drift = float(np.mean(np.abs(by_strength[2.0]["yaw"] - by_strength[0.0]["yaw"]))
                      + np.mean(np.abs(by_strength[-2.0]["yaw"] - by_strength[0.0]["yaw"]))) / 2
    views = []
    for yaw in VIEW_YAWS:
        before = scores(G, predictor, ws, bg, yaw)[a]
        after = scores(G, predictor, apply_edits(ws, [Edit(direction, 2.0)]), bg, yaw)[a]
        views.append(float(np.mean(after - before)))
    return {"val": direction.val_accuracy, "remaining": direction.remaining_accuracy,
            "corr": direction.correlation, "slope": slope, "worst_other": worst,
            "worst_other_change": others[worst], "yaw_drift": yaw_drift, "views": views}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--directions", type=Path, action="append", default=None,
                        help="folder of <attribute>.npz (repeatable; default: the shipped directions)")
    parser.add_argument("--network", default="bundled:heads")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G, info = load_with_info(args.network)
    predictor = AttributePredictor.from_pretrained()
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        ws = G.mapping(G.sample_z(args.n, gen), truncation_psi=0.7)
    bg = G.sample_bg_code(args.n, gen)
    sets = {str(d): {p.stem: p for p in sorted(d.glob("*.npz"))} for d in args.directions} if args.directions \
        else {"shipped": available_directions(args.network)}
    print(f"{args.n} held-out latents (seed {args.seed}, psi 0.7), {info.name} ({info.weights_sha256[:12]}), "
          f"{platform.machine()}, {torch.get_num_threads()} threads")
    print("| set | attribute | conditioned on | val acc | remaining acc | corr | score / unit | worst other "
          "(change, % range) | yaw drift (deg) | change at yaw -20 / 0 / +20 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, files in sets.items():
        for attribute in RANGES:
            if attribute not in files:
                continue
            d = load_direction(files[attribute], generator=info)
            m = measure(G, predictor, d, ws, bg)
            views = " / ".join(f"{v:+.3f}" for v in m["views"])
            print(f"| {name} | {attribute} | {', '.join(d.conditioned_on) or '-'} | {m['val']:.3f} | "
                  f"{m['remaining']:.3f} | {m['corr']:.3f} | {m['slope']:+.3f} | {m['worst_other']} "
                  f"{100 * m['worst_other_change']:.1f} % | {m['yaw_drift']:.2f} | {views} |", flush=True)


if __name__ == "__main__":
    main()
