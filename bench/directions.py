"""Edit directions on the bundled model, measured by the bundled attribute predictor and by the world's truth.

For each direction set (a folder of ``<attribute>.npz``, default: the shipped ones) and each attribute, a
first table with the predictor:

* the SVM's own figures from training: validation accuracy on the held-out split of the extremes, accuracy
  on the unselected middle samples, correlation of signed distance and score (all against the labels it was
  trained on: the predictor's scores, or the world's truth where the direction says ``file-glasses_truth``);
* on N held-out latents (a seed the directions never saw, untruncated, frontal camera): the predictor's
  score change per unit of edit strength (least-squares slope over strengths -2..+2);
* the change of every other attribute at strength +-2, as a fraction of that attribute's range (smile 2,
  the others 1), the worst one reported;
* yaw drift: mean |predicted yaw change| in degrees at strength +-2; the predictor reads yaw with an error of
  about 1.5 deg on model renders, so the second table also measures it against the world (below);
* view consistency: the target score change at strength +2 seen at yaw -20, 0, +20 (mean of each).

The predictor was trained on the same world and labelled the directions' training data, so a second table
sets it beside the world's ground truth. The bundled model was distilled from a procedural world whose head
parameters are a known function of z (``synthetic.params.head_params_from_z``), so every held-out latent's
true attribute is known; that is why the held-out latents are untruncated (a truncated w is no z's head).

* agreement, no edit: the SVM's sign accuracy (n.w + b > 0 for the high class) on the held-out extremes (the
  lowest and highest ``ratio`` of the labels, ``ratio`` as the direction was trained), and Pearson r of the
  signed distance with the label, over all held-out latents; once with the predictor's scores of the
  unedited frontal renders as labels, once with the true parameters;
* the edit's effect in world units: an edited w has no z, so its true attribute is read off its render by
  fitting the world (:func:`fit_attribute`): the world re-renders the head with every parameter at the
  latent's true value except the edited one, which sweeps its range (21 values; 0 and 1 for the binary
  glasses), at the same camera and background; the value whose render is closest to the model's render in
  pixel MSE, refined by a parabola through its grid neighbours, is the fitted value. The least-squares slope
  of fitted value against strength (-2..+2) stands beside the predictor's slope, in the same units (the
  glasses predictor gives a probability, the fit 0 or 1). Values past the world's range saturate at its ends.
  With all other parameters held at their true values, the fit puts any change of the image on the edited
  attribute; the first table's "worst other" covers the rest. How well the fit reads the attribute at all
  is its Pearson r with the true value on the unedited renders (model error included).
* yaw drift against the world: the head's yaw in each render at strength -2, 0, +2 is fitted the same way
  (:func:`fit_yaw`): the world renders the head (the edited attribute at its fitted value, the others true)
  at yaws around the camera's, and the closest in pixel MSE, refined, is the head's apparent yaw. The drift is
  the mean |fitted yaw change| at +-2, as the predictor's; "yaw fit error" is the fit's own mean |error| on the
  unedited renders, where the head sits at yaw 0 by construction, so it bounds how much of a drift is reading.

    python bench/directions.py [--directions DIR ...] [--n 64] [--seed 12345]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

from stylenerf_edit.directions.direction import load_direction
from stylenerf_edit.directions.library import available_directions
from stylenerf_edit.editing.edit import Edit, apply_edits
from stylenerf_edit.generator import load_with_info
from stylenerf_edit.generator.camera import stack_cameras
from stylenerf_edit.synthetic.distill import model_world
from stylenerf_edit.synthetic.params import PARAM_RANGES, HeadParams, background_from_code, head_params_from_z
from stylenerf_edit.synthetic.predictor import AttributePredictor
from stylenerf_edit.synthetic.renderer import render_heads

RANGES = {"smile": 2.0, "age": 1.0, "glasses": 1.0, "hair_color": 1.0}
STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)
VIEW_YAWS = (-20.0, 0.0, 20.0)
GRID_POINTS = 21
YAW_GRID = torch.linspace(-4.0, 4.0, 9)   # degrees around the camera's yaw, for fit_yaw
BINARY = ("glasses",)   # head_params_from_z draws it as 0 or 1
RENDER_CHUNK = 256


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN when either is constant (e.g. a predictor that never sees glasses)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def agreement(distance: np.ndarray, labels: np.ndarray, ratio: float) -> tuple[float, float]:
    """How signed distances from a direction's hyperplane agree with labels [N].

    Returns the sign accuracy on the extremes (the ``round(ratio * N)`` lowest labels should have a negative
    distance, as many highest a positive one) and the Pearson r of distance and label over all N.
    """
    k = max(1, round(ratio * len(labels)))
    order = np.argsort(labels, kind="stable")
    correct = np.sum(distance[order[:k]] < 0) + np.sum(distance[order[-k:]] > 0)
    return float(correct / (2 * k)), pearson(distance, labels)


def attribute_grid(attribute: str) -> torch.Tensor:
    lo, hi, _ = PARAM_RANGES[attribute]
    return torch.tensor([lo, hi]) if attribute in BINARY else torch.linspace(lo, hi, GRID_POINTS)


def refined_argmin(grid: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """cost [..., K] on an evenly spaced grid [K] -> its minimiser: the vertex of the parabola through the best
    grid point and its two neighbours (the three end points when it is an end point), kept within those three;
    the best grid point itself where the parabola is not convex or the grid has fewer than 3 points."""
    k = cost.argmin(-1)
    if len(grid) < 3:
        return grid[k]
    mid = np.clip(k, 1, len(grid) - 2)
    a, b, c = (np.take_along_axis(cost, (mid + d)[..., None], -1)[..., 0] for d in (-1, 0, 1))
    curvature = a - 2 * b + c
    convex = curvature > 0
    offset = np.clip(0.5 * (a - c) / np.where(convex, curvature, 1.0), -1.0, 1.0)
    return np.where(convex, grid[mid] + offset * (grid[1] - grid[0]), grid[k])


def render_table(table: torch.Tensor, world_mat: torch.Tensor, camera_mat: torch.Tensor, background: torch.Tensor,
                 resolution: int, world: int) -> torch.Tensor:
    """World renders [M, 3, R, R] of the heads ``table`` [M, NUM_HEAD_PARAMS], each through its own camera and
    background, in chunks of RENDER_CHUNK."""
    chunks = [slice(i, i + RENDER_CHUNK) for i in range(0, len(table), RENDER_CHUNK)]
    return torch.cat([render_heads(HeadParams.from_tensor(table[c]), world_mat[c], camera_mat[c], resolution,
                                   background[c], world=world).image for c in chunks])


def fit_attribute(images: torch.Tensor, heads: HeadParams, attribute: str, grid: torch.Tensor,
                  world_mat: torch.Tensor, camera_mat: torch.Tensor, background: torch.Tensor,
                  world: int) -> np.ndarray:
    """The world's value of ``attribute`` that best explains each image, the head's other parameters known.

    Args:
        images: [N, M, 3, R, R] in [-1, 1]: M images of head i (e.g. one per edit strength), each seen through
            camera i (``world_mat``, ``camera_mat`` [N, 4, 4]) against background i ([N, 3] in [0, 1]).
        heads: the N heads' true parameters; ``attribute`` is swept over ``grid`` [K] (evenly spaced),
            the others are kept. ``world``: the procedural world version the model was distilled from.
    Returns:
        [N, M]: per image, the grid value whose world render is closest in pixel MSE, refined between grid
        points (:func:`refined_argmin`).
    """
    N, M, _, R, _ = images.shape
    K = len(grid)
    table = heads.as_tensor().repeat_interleave(K, 0)
    table[:, list(PARAM_RANGES).index(attribute)] = grid.repeat(N)
    world_mat, camera_mat, background = (t.repeat_interleave(K, 0) for t in (world_mat, camera_mat, background))
    renders = render_table(table, world_mat, camera_mat, background, R, world).reshape(N, K, 3, R, R)
    cost = torch.stack([(images[i, :, None] - renders[i, None]).square().mean(dim=(2, 3, 4)) for i in range(N)])
    return refined_argmin(grid.double().numpy(), cost.double().numpy())


def fit_yaw(images: torch.Tensor, heads: HeadParams, camera, background: torch.Tensor, world: int) -> np.ndarray:
    """Each image's apparent head yaw in degrees, relative to ``camera``'s: the yaw in :data:`YAW_GRID` whose world
    render of its head (``heads``, one per image) is closest in pixel MSE, refined (:func:`refined_argmin`).

    Args:
        images: [N, 3, R, R] in [-1, 1], each seen through ``camera`` against background [N, 3] in [0, 1].
    """
    N, _, R, _ = images.shape
    K = len(YAW_GRID)
    table = heads.as_tensor().repeat_interleave(K, 0)
    world_mat, camera_mat = stack_cameras([camera.with_(yaw=camera.yaw + float(y)) for y in YAW_GRID] * N)
    renders = render_table(table, world_mat, camera_mat, background.repeat_interleave(K, 0), R,
                           world).reshape(N, K, 3, R, R)
    cost = (images[:, None] - renders).square().mean(dim=(2, 3, 4))
    return refined_argmin(YAW_GRID.double().numpy(), cost.double().numpy())


def render(G, ws, bg, yaw: float = 0.0) -> torch.Tensor:
    cams = [G.camera_prior.frontal().with_(yaw=yaw)] * len(ws)
    with torch.no_grad():
        return G.synthesize(ws, cams, bg).img


def scores(G, predictor, ws, bg, yaw: float = 0.0) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in predictor.predict(render(G, ws, bg, yaw)).items()}


def measure(G, predictor, direction, z, ws, bg, world: int) -> dict[str, float]:
    a = direction.attribute
    images = {s: render(G, apply_edits(ws, [Edit(direction, s)]), bg) for s in STRENGTHS}
    by_strength = {s: {k: v.numpy() for k, v in predictor.predict(img).items()} for s, img in images.items()}
    x = np.repeat(STRENGTHS, len(ws))
    y = np.concatenate([by_strength[s][a] for s in STRENGTHS])
    slope = float(np.polyfit(x, y, 1)[0])

    truth = head_params_from_z(z)
    world_mat, camera_mat = stack_cameras([G.camera_prior.frontal()] * len(ws))
    fitted = fit_attribute(torch.stack([images[s] for s in STRENGTHS], 1), truth, a, attribute_grid(a),
                           world_mat, camera_mat, background_from_code(bg), world)     # [N, strengths]
    true_values = getattr(truth, a).double().numpy()
    distance = direction.distance(ws.numpy())
    ratio = float(direction.settings.get("ratio", 0.2))
    acc_predictor, r_predictor = agreement(distance, by_strength[0.0][a], ratio)
    acc_truth, r_truth = agreement(distance, true_values, ratio)
    yaws = {}
    for s in (-2.0, 0.0, 2.0):   # each head as the world explains it: the edited attribute at its fitted value
        heads = head_params_from_z(z)
        setattr(heads, a, torch.as_tensor(fitted[:, STRENGTHS.index(s)], dtype=torch.float32))
        yaws[s] = fit_yaw(images[s], heads, G.camera_prior.frontal(), background_from_code(bg), world)
    truth_figures = {"fit_yaw_drift": float(np.mean(np.abs(yaws[2.0] - yaws[0.0]))
                                            + np.mean(np.abs(yaws[-2.0] - yaws[0.0]))) / 2,
                     "fit_yaw_error": float(np.mean(np.abs(yaws[0.0]))),
                     "fit_slope": float(np.polyfit(np.tile(STRENGTHS, len(ws)), fitted.ravel(), 1)[0]),
                     "fit_r": pearson(fitted[:, STRENGTHS.index(0.0)], true_values),
                     "acc_predictor": acc_predictor, "acc_truth": acc_truth,
                     "r_predictor": r_predictor, "r_truth": r_truth}
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
            "worst_other_change": others[worst], "yaw_drift": yaw_drift, "views": views, **truth_figures}


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
    z = G.sample_z(args.n, gen)
    with torch.no_grad():
        ws = G.mapping(z)
    bg = G.sample_bg_code(args.n, gen)
    sets = {str(d): {p.stem: p for p in sorted(d.glob("*.npz"))} for d in args.directions} if args.directions \
        else {"shipped": available_directions(args.network)}
    print(f"{args.n} held-out latents (seed {args.seed}, psi 1), {info.name} ({info.weights_sha256[:12]}), "
          f"{platform.machine()}, {torch.get_num_threads()} threads")
    print("| set | attribute | conditioned on | val acc | remaining acc | corr | score / unit | worst other "
          "(change, % range) | yaw drift (deg) | change at yaw -20 / 0 / +20 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    measured = []
    for name, files in sets.items():
        for attribute in RANGES:
            if attribute not in files:
                continue
            d = load_direction(files[attribute], generator=info)
            m = measure(G, predictor, d, z, ws, bg, model_world(info.extra.get("source", {})))
            measured.append((name, attribute, m))
            views = " / ".join(f"{v:+.3f}" for v in m["views"])
            print(f"| {name} | {attribute} | {', '.join(d.conditioned_on) or '-'} | {m['val']:.3f} | "
                  f"{m['remaining']:.3f} | {m['corr']:.3f} | {m['slope']:+.3f} | {m['worst_other']} "
                  f"{100 * m['worst_other_change']:.1f} % | {m['yaw_drift']:.2f} | {views} |", flush=True)
    print("\nPredictor beside the world's truth, same held-out latents:\n")
    print("| set | attribute | change / unit: predictor | change / unit: world fit | world fit r (unedited) | "
          "sign acc, extremes: predictor / truth | r(distance, label): predictor / truth | yaw drift (deg): "
          "predictor / world fit | yaw fit error, unedited (deg) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, attribute, m in measured:
        print(f"| {name} | {attribute} | {m['slope']:+.3f} | {m['fit_slope']:+.3f} | {m['fit_r']:.3f} | "
              f"{m['acc_predictor']:.3f} / {m['acc_truth']:.3f} | {m['r_predictor']:.3f} / {m['r_truth']:.3f} | "
              f"{m['yaw_drift']:.2f} / {m['fit_yaw_drift']:.2f} | {m['fit_yaw_error']:.2f} |")


if __name__ == "__main__":
    main()
