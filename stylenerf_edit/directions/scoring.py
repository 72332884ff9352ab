"""How well a direction's signed distance follows a score: accuracies on the extremes and the middle,
correlation, score per unit step and spread."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .direction import Direction, DirectionError
from .select import Selection, split_extremes


def line_fit(distance: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(Pearson r, least-squares slope of score vs distance); NaN where either is constant."""
    d, s = distance - distance.mean(), scores - scores.mean()
    dd, ss = float(d @ d), float(s @ s)
    if dd == 0:
        return math.nan, math.nan
    return (float(d @ s / math.sqrt(dd * ss)) if ss > 0 else math.nan), float(d @ s / dd)


def measure(d: np.ndarray, s: np.ndarray, sel: Selection, chosen: np.ndarray, labels: np.ndarray,
            val: np.ndarray) -> dict[str, float]:
    """Metrics of signed distances ``d`` [N] against scores ``s`` [N] (see ``svm.train_direction``)."""
    middle = sel.remaining[s[sel.remaining] != sel.threshold]
    scored = np.isfinite(s)
    correlation, slope = line_fit(d[scored], s[scored])
    return {"val_accuracy": float(((d[chosen[val]] > 0) == labels[val]).mean()),
            "remaining_accuracy": (float(((d[middle] > 0) == (s[middle] > sel.threshold)).mean()) if len(middle)
                                   else math.nan),
            "correlation": correlation, "score_per_unit": slope, "spread": float(d[scored].std())}


def evaluate_direction(direction: Direction, codes: np.ndarray, scores: np.ndarray) -> Direction:
    """``direction`` with every metric measured on codes (see ``Direction.distance``) and their scores [N]
    (non-finite scores ignored), using the selection and validation split it was trained with (its
    ``settings`` and ``seed``): e.g. to measure a conditioned direction on its training data."""
    s = np.asarray(scores, dtype=np.float64)
    d = direction.distance(codes)
    if s.shape != d.shape:
        raise DirectionError(f"direction '{direction.attribute}': {len(d)} codes but scores of shape {s.shape}")
    st = direction.settings
    sel, chosen, labels, _, val = split_extremes(s, st.get("ratio"), st.get("count"), st.get("split", 0.7),
                                                 direction.seed, direction.attribute)
    return replace(direction, **measure(d, s, sel, chosen, labels, val))
