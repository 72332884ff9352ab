"""Sample, label, fit: edit directions for a generator in one call (``stylenerf-edit directions train``).

``train_directions`` draws (or resumes) a sample folder, scores it with a labeler, fits one linear SVM per
attribute in W (``directions.svm``), optionally makes each direction conditional on others (their normals
projected out: ``yaw`` keeps edits from turning the head), and writes ``<attribute>.npz`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from stylenerf_edit.generator.checkpoint import load_with_info, resolve_device
from stylenerf_edit.invert.latent import GeneratorRef

from .labelers import label_samples, make_labeler
from .sample import sample_latents
from .conditioning import condition
from .direction import Direction, DirectionError, save_direction
from .scoring import evaluate_direction
from .svm import train_direction, training_samples_per_side


@dataclass
class TrainedDirection:
    direction: Direction
    path: Path


def train_directions(network: str | Path, attributes: Sequence[str], out_dir: str | Path,
                     labeler: str = "predictor", samples: int = 4000, samples_dir: str | Path | None = None,
                     cameras: str = "frontal", seed: int = 0, truncation_psi: float = 1.0, ratio: float = 0.2,
                     C: float | str = "auto", conditions: Sequence[str] = (), device: str | None = None,
                     progress: bool = True) -> list[TrainedDirection]:
    """Train one direction per attribute and write ``out_dir/<attribute>.npz``.

    Args:
        attributes: what to learn, among the labeler's attributes.
        labeler: ``predictor``, ``landmarks``, ``file:PATH`` or ``clip:...`` (see ``directions.labelers``).
        samples_dir: where the samples and labels live (default ``out_dir/samples``); reruns resume there.
        conditions: attributes whose directions are projected out of every other one (each trained too).
        truncation_psi: 1.0 samples all of W, as InterFaceGAN does; edits work on truncated latents too.
    """
    if C == "auto" and training_samples_per_side(samples, ratio, seed=seed) < 3:
        enough = next(n for n in range(samples, 100 * samples) if training_samples_per_side(n, ratio, seed=seed) >= 3)
        raise DirectionError(f"--samples {samples} at --ratio {ratio:g} leaves "
                             f"{training_samples_per_side(samples, ratio, seed=seed)} training samples per side; "
                             f"the SVM needs 3: use --samples {enough} or more, or a larger --ratio")
    out = Path(out_dir)
    G, info = load_with_info(network, device=resolve_device(device))
    folder = Path(samples_dir) if samples_dir is not None else out / "samples"
    labels = make_labeler(labeler)
    wanted = list(dict.fromkeys([*attributes, *conditions]))
    missing = [a for a in wanted if a not in labels.attributes]
    if missing:
        raise DirectionError(f"labeler '{labeler}' gives {', '.join(labels.attributes)}, not "
                             f"{', '.join(missing)}; choose attributes it provides")
    data = sample_latents(G, info, folder, samples, seed=seed, truncation_psi=truncation_psi, cameras=cameras,
                          progress=progress, load_images=False)
    scores = label_samples(folder, labels, progress=progress)
    ref = GeneratorRef.from_info(info)
    plain = {a: train_direction(data.w, scores[a], a, ratio=ratio, seed=seed, C=C, generator=ref,
                                labeler=labels.name) for a in wanted}
    results = []
    for a in attributes:
        direction = plain[a]
        others = [plain[c] for c in conditions if c != a]
        if others:
            direction = evaluate_direction(condition(direction, others), data.w, scores[a])
        results.append(TrainedDirection(direction, save_direction(direction, out / f"{a}.npz")))
    return results


def direction_summary(d: Direction) -> str:
    """One line: attribute, accuracies, correlation and score change per unit step."""
    cond = f", conditioned on {', '.join(d.conditioned_on)}" if d.conditioned_on else ""

    def fmt(x: float) -> str:
        return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"

    return (f"{d.attribute}: validation accuracy {fmt(d.val_accuracy)}, remaining {fmt(d.remaining_accuracy)}, "
            f"correlation {fmt(d.correlation)}, score/unit {fmt(d.score_per_unit)} ({d.n_samples} samples{cond})")
