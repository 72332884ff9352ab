"""Semantic edit directions: a linear SVM between the highest- and lowest-scoring latents (InterFaceGAN-style).

Improvements over InterFaceGAN's boundary: the hyperplane keeps its offset (``distance(w) = n . w + b`` is a
signed distance in W units, not a distance from a plane through the origin), the direction is measured on the
unselected middle samples as well as on a held-out split, it is calibrated (``score_per_unit``), ``C`` can be
cross-validated (InterFaceGAN's fixed C=1 fits noise when extremes are few for the dimension), W+ directions
can be learnt per row, and conditioning removes the span of several other normals at once.

The file format is ``directions.direction``, the choice of extremes ``directions.select``, the metrics
``directions.scoring`` and conditioning ``directions.conditioning``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from stylenerf_edit.invert.latent import GeneratorRef

from .direction import Direction, DirectionError
from .scoring import line_fit, measure
from .select import split_extremes

METHODS = ("auto", "linear-svc", "sgd")
AUTO_C_GRID = (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5)   # toward 0 the normal tends to the class-mean difference


def _training_codes(codes: np.ndarray, rows: Sequence[int] | None,
                    attribute: str) -> tuple[np.ndarray, str, list[int] | None, tuple[int, ...]]:
    """codes -> (features [N, F] float64, space, rows, vector shape)."""
    x = np.asarray(codes, dtype=np.float64)
    if x.ndim == 2:
        space, shape = "w", x.shape[1:]
        rows = None if rows is None else [int(r) for r in rows]
        if rows is not None and (not rows or min(rows) < 0 or len(set(rows)) != len(rows)):
            raise DirectionError(f"direction '{attribute}': rows {rows} must be distinct ws row indices")
    elif x.ndim == 3:
        space = "w+"
        rows = list(range(x.shape[1])) if rows is None else [int(r) for r in rows]
        if not rows or min(rows) < 0 or max(rows) >= x.shape[1] or len(set(rows)) != len(rows):
            raise DirectionError(f"direction '{attribute}': rows {rows} must be distinct rows of the "
                                 f"{x.shape[1]} in the codes")
        x = x[:, rows]
        shape = x.shape[1:]
    else:
        raise DirectionError(f"direction '{attribute}': codes must be [N, D] (w) or [N, R, D] (ws), got {x.shape}")
    if not np.isfinite(x).all():
        raise DirectionError(f"direction '{attribute}': codes contain NaN or infinite values; re-sample them")
    return x.reshape(len(x), -1), space, rows, tuple(shape)


def _best_cut(projections: np.ndarray, labels: np.ndarray) -> float:
    """The threshold on 1-D projections [n] with the fewest training errors (label 1 above), and among those the
    midpoint of the widest gap: the 1-D max-margin cut when the classes separate."""
    order = np.argsort(projections, kind="stable")
    p, y = projections[order], labels[order]
    # errors of a cut after the k lowest (k = 1 .. n-1): positives below it plus negatives above it
    pos_below = np.cumsum(y)[:-1]
    neg_above = (len(y) - y.sum()) - np.cumsum(1 - y)[:-1]
    errors = pos_below + neg_above
    gaps = np.diff(p)
    candidates = np.flatnonzero(errors == errors.min())
    k = candidates[np.argmax(gaps[candidates])]
    return float((p[k] + p[k + 1]) / 2)


def _fit_plane(x: np.ndarray, labels: np.ndarray, C: float, method: str, seed: int) -> tuple[np.ndarray, float]:
    """Fit one linear classifier on features x [n, F] and labels [n] (1 = high score): (unit normal [F], offset).

    The optimiser sees x centred on its mean and divided by one global scale: a translation and an isotropic
    scaling, which leave the normal's direction in W unchanged (per-feature scaling would tilt it) and make
    ``C`` mean the same for codes of any magnitude. The offset is then refit along the normal (``_best_cut``):
    liblinear penalises its intercept and SGD's intercept moves at the weights' decaying step, so with strong
    regularisation neither intercept is a reliable cut, while the normal is.
    """
    from sklearn.linear_model import SGDClassifier
    from sklearn.svm import LinearSVC

    mean = x.mean(0)
    scale = float(np.sqrt(((x - mean) ** 2).mean())) or 1.0
    if method == "linear-svc":
        clf = LinearSVC(C=C, dual="auto", max_iter=10000, random_state=seed)
    else:   # hinge loss + alpha/2 |w|^2 per sample is the SVM objective divided by C n
        clf = SGDClassifier(loss="hinge", alpha=1.0 / (C * len(x)), max_iter=1000, tol=1e-4, random_state=seed)
    clf.fit((x - mean) / scale, labels)
    a = clf.coef_[0].astype(np.float64)
    norm = float(np.linalg.norm(a))
    if not norm > 0 or not math.isfinite(norm):
        raise DirectionError("the classifier found no separating direction (all weights zero); check that the "
                             "scores depend on the codes")
    normal = a / norm
    return normal, -_best_cut(x @ normal, labels)


def _choose_c(x: np.ndarray, labels: np.ndarray, scores: np.ndarray, method: str,
              seed: int) -> tuple[float, list[list[float | None]]]:
    """C of ``AUTO_C_GRID`` whose normals, fit on 2 of 3 stratified folds, give projections best correlated with
    the score on the third (mean r over folds). Accuracy barely moves with C on separable extremes; the
    correlation drops as an under-regularised normal picks up noise. Returns (C, [[C, mean r or None], ...])."""
    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(3, shuffle=True, random_state=seed).split(x, labels))
    table: list[list[float | None]] = []
    for C in AUTO_C_GRID:
        rs = []
        for fit, held in folds:
            try:
                normal, _ = _fit_plane(x[fit], labels[fit], C, method, seed)
            except DirectionError:      # all weights zero at this C: no normal to score
                break
            rs.append(line_fit(x[held] @ normal, scores[held])[0])
        valid = len(rs) == len(folds) and not np.isnan(rs).any()
        table.append([C, float(np.mean(rs)) if valid else None])
    scored = [row for row in table if row[1] is not None]
    if not scored:
        raise DirectionError("no C in the automatic grid gave a usable direction; check that the scores depend "
                             "on the codes")
    return float(max(scored, key=lambda row: row[1])[0]), table


def training_samples_per_side(n: int, ratio: float, split: float = 0.7, seed: int = 0) -> int:
    """Fewest training samples on one side when ``n`` scored samples are split as :func:`train_direction`
    splits them (0 when the split is impossible); C='auto' needs 3."""
    try:
        _, _, labels, train, _ = split_extremes(np.arange(n, dtype=np.float64), ratio, None, split, seed, "")
    except DirectionError:
        return 0
    return int(np.bincount(labels[train], minlength=2).min())


def train_direction(codes: np.ndarray, scores: np.ndarray, attribute: str, *, ratio: float | None = 0.2,
                    count: int | None = None, split: float = 0.7, seed: int = 0, C: float | str = 1.0,
                    method: str = "auto", rows: Sequence[int] | None = None,
                    generator: GeneratorRef | None = None, labeler: str = "") -> Direction:
    """Learn the hyperplane separating the highest from the lowest ``scores`` [N] of ``codes``.

    codes [N, D]: a "w" direction (``rows``: the ws rows it applies to by default, None = all).
    codes [N, R, D]: a per-row "w+" direction over ``rows`` of R (default all), vector [len(rows), D].
    ``method`` "auto" uses LinearSVC for "w" and a hinge-loss SGDClassifier for "w+" (R*D features);
    "linear-svc" or "sgd" force one. ``C`` is the SVM's inverse regularisation on codes scaled to unit RMS
    (SGD: alpha = 1/(C n)); "auto" picks it from ``AUTO_C_GRID`` by 3-fold cross-validation on the training
    part (see ``_choose_c``), recording the table in ``settings``.

    The extremes (see :func:`select_extremes`) are split ``split``/(1 - split), stratified and seeded; the
    classifier is fit on the first part (offset: the best cut along its normal, see ``_fit_plane``),
    ``val_accuracy`` measured on the second. ``remaining_accuracy``
    labels each middle sample by its score's side of ``Selection.threshold`` (midway across the gap between
    the groups, where the classifier is asked to cut) and counts how often the distance's sign agrees;
    samples exactly on the threshold are left out. ``spread`` is the standard deviation of all scored samples'
    signed distances: edits count their strength in it.
    """
    if method not in METHODS:
        raise DirectionError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < split < 1:
        raise DirectionError(f"split must be the training share in (0, 1), got {split!r}")
    if C != "auto" and not (isinstance(C, (int, float)) and C > 0):
        raise DirectionError(f"C must be positive or 'auto', got {C!r}")
    x, space, rows, shape = _training_codes(codes, rows, attribute)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(x),):
        raise DirectionError(f"direction '{attribute}': {len(x)} codes but scores of shape {s.shape}; "
                             "give one score per code")
    sel, chosen, labels, train, val = split_extremes(s, ratio, count, split, seed, attribute)
    if method == "auto":
        method = "linear-svc" if space == "w" else "sgd"
    settings: dict[str, Any] = {"ratio": None if count is not None else ratio, "count": count, "split": split}
    xt, yt = x[chosen[train]], labels[train]
    if C == "auto" and np.bincount(yt).min() < 3:
        raise DirectionError(f"direction '{attribute}': C='auto' needs 3 training samples per side, got "
                             f"{np.bincount(yt).min()}; raise ratio/count or give C a value")
    try:
        if C == "auto":
            C, settings["auto_C"] = _choose_c(xt, yt, s[chosen[train]], method, seed)
        settings["C"] = float(C)
        normal, offset = _fit_plane(xt, yt, float(C), method, seed)
    except DirectionError as e:
        raise DirectionError(f"direction '{attribute}': {e}") from None

    center = (x[sel.positive].mean(0) + x[sel.negative].mean(0)) / 2
    direction = Direction(attribute=attribute, vector=normal.reshape(shape), space=space, rows=rows,
                          offset=offset, center=center.reshape(shape), n_samples=int(np.isfinite(s).sum()),
                          n_positive=len(sel.positive), n_negative=len(sel.negative), generator=generator,
                          labeler=labeler, method=method, seed=seed, settings=settings)
    return replace(direction, **measure(x @ normal + offset, s, sel, chosen, labels, val))
