"""Semantic edit directions: a linear SVM between the highest- and lowest-scoring latents (InterFaceGAN-style).

Improvements over InterFaceGAN's boundary: the hyperplane keeps its offset (``distance(w) = n . w + b`` is a
signed distance in W units, not a distance from a plane through the origin), the direction is measured on the
unselected middle samples as well as on a held-out split, it is calibrated (``score_per_unit``), ``C`` can be
cross-validated (InterFaceGAN's fixed C=1 fits noise when extremes are few for the dimension), W+ directions
can be learnt per row, and conditioning removes the span of several other normals at once.

File schema, format ``stylenerf-edit-direction`` version 1 (plain numpy arrays, ``allow_pickle=False``):

    vector   float32 [w_dim] ("w") or [R, w_dim] ("w+")   unit normal (flattened norm 1), toward higher scores
    center   float32, vector's shape, optional             midpoint of the two classes' centroids in W
    meta     0-d unicode string                            JSON: format, format_version, tool_version, attribute,
                                                           space, rows, offset, metrics {val_accuracy,
                                                           remaining_accuracy, correlation, score_per_unit;
                                                           null = not measured}, n_samples, n_positive,
                                                           n_negative, conditioned_on, generator {name,
                                                           weights_sha256, num_ws, w_dim, img_resolution} or
                                                           null, labeler, method, seed, settings {}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stylenerf_edit import __version__
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import save_npz
from stylenerf_edit.generator.checkpoint import GeneratorInfo
from stylenerf_edit.invert.latent import GeneratorRef

FORMAT = "stylenerf-edit-direction"
FORMAT_VERSION = 1
METHODS = ("auto", "linear-svc", "sgd")
SPACES = ("w", "w+")
METRICS = ("val_accuracy", "remaining_accuracy", "correlation", "score_per_unit", "spread")
AUTO_C_GRID = (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5)   # toward 0 the normal tends to the class-mean difference
UNIT_TOLERANCE = 1e-3          # float32 storage keeps the norm within ~1e-6; more means a foreign or edited file
_TRAIN_HINT = "train one with `stylenerf-edit directions train`"


class DirectionError(StyleNerfEditError):
    """A direction cannot be trained, combined, applied, or read from its file."""


@dataclass
class Selection:
    """The extreme samples of a score: indices into the scored array.

    positive: [k] int, highest scores first; negative: [k] int, lowest scores first; remaining: [M] int, the
    other finite-scored samples in index order; threshold: the score halfway between the two groups'
    innermost members (lowest positive, highest negative), used to label the remaining samples.
    """

    positive: np.ndarray
    negative: np.ndarray
    remaining: np.ndarray
    threshold: float


@dataclass
class Direction:
    """A hyperplane in W (or in a stack of W+ rows) separating low from high scores of one attribute.

    ``vector`` is the unit normal, pointing toward higher scores; with ``offset`` b, ``n . w + b`` is the signed
    distance of w from the plane in W units, so one unit step of :meth:`as_ws_delta` moves it by 1 (for "w":
    on the rows ``distance`` averages). Metrics are NaN where not measured (e.g. after :func:`condition`).
    """

    attribute: str
    vector: np.ndarray                    # float32 [D] ("w") or [R, D] ("w+"), unit norm over all entries
    space: str                            # "w" or "w+"
    rows: list[int] | None                # ws rows it applies to by default; "w": None = all; "w+": R rows
    offset: float                         # b in distance = n . w + b, W units
    center: np.ndarray | None = None      # vector's shape: midpoint of the two classes' centroids
    val_accuracy: float = math.nan        # on the held-out split of the extremes
    remaining_accuracy: float = math.nan  # on the unselected middle samples, labelled by Selection.threshold
    correlation: float = math.nan         # Pearson r of signed distance vs score, all scored samples
    score_per_unit: float = math.nan      # least-squares slope of score vs signed distance, all scored samples
    spread: float = math.nan              # standard deviation of the samples' signed distances: the unit of edits
    n_samples: int = 0                    # samples with a finite score
    n_positive: int = 0
    n_negative: int = 0
    conditioned_on: list[str] = field(default_factory=list)
    generator: GeneratorRef | None = None
    labeler: str = ""                     # what produced the scores (model name, file, ...)
    method: str = ""                      # "linear-svc" or "sgd"
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)   # ratio, count, split, C (auto_C table) as trained
    tool_version: str = __version__

    def __post_init__(self) -> None:
        self.vector = np.asarray(self.vector, dtype=np.float32)
        if self.center is not None:
            self.center = np.asarray(self.center, dtype=np.float32)
            assert self.center.shape == self.vector.shape, f"center {self.center.shape} != vector {self.vector.shape}"
        assert self.space in SPACES, f"space must be one of {SPACES}, got {self.space!r}"
        assert self.vector.ndim == (1 if self.space == "w" else 2), \
            f"a '{self.space}' vector cannot have shape {self.vector.shape}"
        if self.rows is not None:
            self.rows = [int(r) for r in self.rows]
            assert self.rows and min(self.rows) >= 0 and len(set(self.rows)) == len(self.rows), \
                f"rows must be distinct non-negative indices, got {self.rows}"
        if self.space == "w+":
            assert self.rows is not None and len(self.rows) == self.vector.shape[0], \
                f"a W+ vector of {self.vector.shape[0]} rows needs as many rows, got {self.rows}"
        assert abs(float(np.linalg.norm(self.vector)) - 1) < UNIT_TOLERANCE, "vector must have unit norm"
        self.offset = float(self.offset)

    @property
    def w_dim(self) -> int:
        return int(self.vector.shape[-1])

    def distance(self, codes: np.ndarray) -> np.ndarray:
        """Signed distance from the hyperplane, [N], of codes [N, D] or ws [N, num_ws, D].

        "w": ws rows are averaged over ``rows`` (all rows when None) first. "w+": ws rows ``rows`` are used;
        codes [N, D] count as w repeated on every row.
        """
        x = np.asarray(codes, dtype=np.float64)
        if x.ndim not in (2, 3) or x.shape[-1] != self.w_dim:
            raise DirectionError(f"direction '{self.attribute}': codes must be [N, {self.w_dim}] or "
                                 f"[N, num_ws, {self.w_dim}], got {x.shape}")
        v = self.vector.astype(np.float64)
        if x.ndim == 3:
            self._check_rows(self.rows or [], x.shape[1])
        if self.space == "w":
            if x.ndim == 3:
                x = x[:, self.rows].mean(1) if self.rows is not None else x.mean(1)
            return x @ v + self.offset
        if x.ndim == 2:
            return x @ v.sum(0) + self.offset
        return np.einsum("nrd,rd->n", x[:, self.rows], v) + self.offset

    def as_ws_delta(self, num_ws: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """One unit step along the normal as a W+ offset, float32 [num_ws, D]: the vector on ``rows`` (default:
        the direction's own rows, all rows for a "w" direction without them), zero elsewhere.

        A "w+" direction can only be applied to (a subset of) the rows it was learnt on.
        """
        delta = np.zeros((num_ws, self.w_dim), dtype=np.float32)
        if self.space == "w":
            chosen = list(rows) if rows is not None else (self.rows if self.rows is not None else range(num_ws))
            chosen = [int(r) for r in chosen]
            self._check_rows(chosen, num_ws)
            delta[chosen] = self.vector
            return delta
        own = self.rows or []
        chosen = own if rows is None else [int(r) for r in rows]
        foreign = sorted(set(chosen) - set(own))
        if foreign:
            raise DirectionError(f"direction '{self.attribute}' is per-row (W+) for rows {own}; rows {foreign} are "
                                 "not among them: edit on those rows or a subset of them")
        self._check_rows(chosen, num_ws)
        delta[chosen] = self.vector[[own.index(r) for r in chosen]]
        return delta

    def _check_rows(self, rows: Sequence[int], num_ws: int) -> None:
        if any(r < 0 or r >= num_ws for r in rows):
            raise DirectionError(f"direction '{self.attribute}': rows {list(rows)} do not fit a latent with "
                                 f"{num_ws} ws rows (0-{num_ws - 1})")


# --- training ------------------------------------------------------------------------------------------

def select_extremes(scores: np.ndarray, ratio: float | None = 0.2, count: int | None = None) -> Selection:
    """The ``k`` highest- and ``k`` lowest-scoring samples of scores [N]; NaN (and infinite) scores take no part.

    ``k`` is ``count`` when given (it takes precedence over ``ratio``), else ``floor(ratio * finite N)``.
    Fails when ``k`` < 1, when the two groups would share samples (2k > finite N), or when they share a score
    value (ties across the gap make the labels arbitrary).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise DirectionError(f"scores must be one value per sample, [N], got shape {s.shape}")
    valid = np.flatnonzero(np.isfinite(s))
    if count is not None:
        if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
            raise DirectionError(f"count must be a positive whole number of samples per side, got {count!r}")
        k = int(count)
    elif ratio is not None:
        if not 0 < ratio <= 0.5:
            raise DirectionError(f"ratio must be in (0, 0.5] (the share of samples per side), got {ratio!r}")
        k = int(ratio * len(valid))
    else:
        raise DirectionError("give either ratio (share of samples per side) or count (samples per side)")
    if k < 1:
        raise DirectionError(f"too few scored samples ({len(valid)} of {len(s)} are finite) to pick extremes at "
                             f"ratio {ratio}; score more samples or raise the ratio")
    if 2 * k > len(valid):
        raise DirectionError(f"top and bottom {k} overlap: only {len(valid)} samples have a score; "
                             "lower count/ratio or score more samples")
    positive = valid[np.argsort(-s[valid], kind="stable")[:k]]
    negative = valid[np.argsort(s[valid], kind="stable")[:k]]
    low_pos, high_neg = s[positive].min(), s[negative].max()
    if low_pos <= high_neg:
        raise DirectionError(f"top and bottom {k} overlap in score (both hold {low_pos:g}); too many tied scores, "
                             "lower count/ratio or use a finer-grained labeler")
    remaining = np.setdiff1d(valid, np.concatenate([positive, negative]))
    return Selection(positive=positive, negative=negative, remaining=remaining,
                     threshold=float((low_pos + high_neg) / 2))


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


def _line_fit(distance: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(Pearson r, least-squares slope of score vs distance); NaN where either is constant."""
    d, s = distance - distance.mean(), scores - scores.mean()
    dd, ss = float(d @ d), float(s @ s)
    if dd == 0:
        return math.nan, math.nan
    return (float(d @ s / math.sqrt(dd * ss)) if ss > 0 else math.nan), float(d @ s / dd)


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
            rs.append(_line_fit(x[held] @ normal, scores[held])[0])
        valid = len(rs) == len(folds) and not np.isnan(rs).any()
        table.append([C, float(np.mean(rs)) if valid else None])
    scored = [row for row in table if row[1] is not None]
    if not scored:
        raise DirectionError("no C in the automatic grid gave a usable direction; check that the scores depend "
                             "on the codes")
    return float(max(scored, key=lambda row: row[1])[0]), table


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
    sel, chosen, labels, train, val = _split(s, ratio, count, split, seed, attribute)
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
    return replace(direction, **_measure(x @ normal + offset, s, sel, chosen, labels, val))


def _split(s: np.ndarray, ratio: float | None, count: int | None, split: float, seed: int,
           attribute: str) -> tuple[Selection, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The extremes of scores ``s``, their labels (1 = high) and a seeded, stratified train/validation split."""
    from sklearn.model_selection import train_test_split

    sel = select_extremes(s, ratio, count)
    chosen = np.concatenate([sel.positive, sel.negative])
    labels = np.concatenate([np.ones(len(sel.positive), int), np.zeros(len(sel.negative), int)])
    try:
        train, val = train_test_split(np.arange(len(chosen)), train_size=split, stratify=labels,
                                      random_state=seed)
    except ValueError:
        raise DirectionError(f"direction '{attribute}': {len(sel.positive)} samples per side are too few for a "
                             f"{split:g} train/validation split; raise ratio/count or score more samples") from None
    return sel, chosen, labels, train, val


def _measure(d: np.ndarray, s: np.ndarray, sel: Selection, chosen: np.ndarray, labels: np.ndarray,
             val: np.ndarray) -> dict[str, float]:
    """Metrics of signed distances ``d`` [N] against scores ``s`` [N] (see :func:`train_direction`)."""
    middle = sel.remaining[s[sel.remaining] != sel.threshold]
    scored = np.isfinite(s)
    correlation, slope = _line_fit(d[scored], s[scored])
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
    sel, chosen, labels, _, val = _split(s, st.get("ratio"), st.get("count"), st.get("split", 0.7), direction.seed,
                                         direction.attribute)
    return replace(direction, **_measure(d, s, sel, chosen, labels, val))


# --- conditioning --------------------------------------------------------------------------------------

def project_out(vector: np.ndarray, others: Sequence[np.ndarray]) -> np.ndarray:
    """``vector`` (any shape) minus its component in the span of ``others`` (same shape), renormalised, float64.

    All others are removed at once through an orthonormal basis of their span (one-by-one projections leave
    a component along non-orthogonal others); linearly dependent others are allowed.
    """
    v = np.asarray(vector, dtype=np.float64)
    flat = v.reshape(-1)
    if not np.isfinite(flat).all() or not np.linalg.norm(flat) > 0:
        raise DirectionError("cannot condition a zero or non-finite direction vector")
    if not others:
        return v / np.linalg.norm(flat)
    mats = [np.asarray(o, dtype=np.float64) for o in others]
    if any(m.shape != v.shape for m in mats):
        raise DirectionError(f"directions to condition on must have the vector's shape {v.shape}, got "
                             f"{[m.shape for m in mats]}")
    basis, sv, _ = np.linalg.svd(np.stack([m.reshape(-1) for m in mats], 1), full_matrices=False)
    if not np.isfinite(sv).all():
        raise DirectionError("a direction to condition on contains NaN or infinite values")
    basis = basis[:, sv > sv.max() * 1e-10] if sv.max() > 0 else basis[:, :0]
    r = flat - basis @ (basis.T @ flat)
    r -= basis @ (basis.T @ r)       # second pass removes what round-off left of the span
    if np.linalg.norm(r) <= 1e-6 * np.linalg.norm(flat):
        raise DirectionError("the direction lies in the span of the directions it is conditioned on; "
                             "condition on fewer attributes")
    return (r / np.linalg.norm(r)).reshape(v.shape)


def condition(direction: Direction, others: Sequence[Direction]) -> Direction:
    """A conditional direction: ``direction``'s normal with the span of ``others``' normals removed, so moving
    along it leaves their signed distances (their attributes, to first order) unchanged.

    The new plane passes through the point of the original plane nearest to ``direction.center`` (the origin's
    foot when there is no center), so the two planes meet near the data. ``score_per_unit`` becomes
    ``score_per_unit * cos(old, new)`` (exact if the score depends on the original distance only); the
    accuracies and correlation are NaN until measured again (:func:`evaluate_direction`).
    """
    if not others:
        raise DirectionError(f"direction '{direction.attribute}': nothing to condition on")
    for o in others:
        if o.space != direction.space or o.vector.shape != direction.vector.shape or (
                o.space == "w+" and o.rows != direction.rows):
            raise DirectionError(f"cannot condition '{direction.attribute}' ({direction.space} "
                                 f"{list(direction.vector.shape)}, rows {direction.rows}) on '{o.attribute}' "
                                 f"({o.space} {list(o.vector.shape)}, rows {o.rows}); train both alike")
        if (o.generator is not None and direction.generator is not None
                and o.generator.weights_sha256 != direction.generator.weights_sha256):
            raise DirectionError(f"cannot condition '{direction.attribute}' ({direction.generator.name}) on "
                                 f"'{o.attribute}' ({o.generator.name}): they belong to different generators")
    old = direction.vector.astype(np.float64)
    new = project_out(old, [o.vector for o in others])
    center = np.zeros_like(old) if direction.center is None else direction.center.astype(np.float64)
    anchor = center - (float((old * center).sum()) + direction.offset) * old
    conditioned_on = list(direction.conditioned_on)
    conditioned_on += [o.attribute for o in others if o.attribute not in conditioned_on]
    return replace(direction, vector=new, offset=-float((new * anchor).sum()), conditioned_on=conditioned_on,
                   val_accuracy=math.nan, remaining_accuracy=math.nan, correlation=math.nan, spread=math.nan,
                   score_per_unit=direction.score_per_unit * float((old * new).sum()))


# --- files ---------------------------------------------------------------------------------------------

def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def save_direction(direction: Direction, path: str | Path) -> Path:
    """Write ``direction`` to ``path`` (``.npz``) atomically: an interrupted save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = direction
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "tool_version": d.tool_version,
            "attribute": d.attribute, "space": d.space, "rows": d.rows, "offset": d.offset,
            "metrics": {k: _number(getattr(d, k)) for k in METRICS}, "n_samples": d.n_samples,
            "n_positive": d.n_positive, "n_negative": d.n_negative, "conditioned_on": d.conditioned_on,
            "generator": None if d.generator is None else vars(d.generator), "labeler": d.labeler,
            "method": d.method, "seed": d.seed, "settings": d.settings}
    arrays = {"vector": d.vector, "meta": np.array(json.dumps(meta))}
    if d.center is not None:
        arrays["center"] = d.center
    return save_npz(path, arrays)


def _float_array(data: Any, key: str, path: Path) -> np.ndarray:
    value = data[key]
    if value.dtype.kind != "f":
        raise DirectionError(f"{path}: '{key}' must be a float array, got {value.dtype}; {_TRAIN_HINT} again")
    if not np.isfinite(value).all():
        raise DirectionError(f"{path}: '{key}' contains NaN or infinite values; {_TRAIN_HINT} again")
    return value


def _metadata(data: Any, path: Path) -> dict[str, Any]:
    if "meta" not in data.files or "vector" not in data.files:
        raise DirectionError(f"{path}: not a stylenerf-edit direction (no 'meta'/'vector' entry); {_TRAIN_HINT}")
    try:
        meta = json.loads(str(data["meta"]))
    except (ValueError, TypeError):
        raise DirectionError(f"{path}: its 'meta' entry is not valid JSON; {_TRAIN_HINT} again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DirectionError(f"{path}: not a stylenerf-edit direction (format {found!r}); {_TRAIN_HINT}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DirectionError(f"{path}: direction format version {version!r} is newer than this tool understands "
                             f"({FORMAT_VERSION}); upgrade stylenerf-edit")
    return meta


def load_direction(path: str | Path, generator: GeneratorInfo | None = None) -> Direction:
    """Read and validate a direction file; with ``generator``, also require that it fits (and, when the file
    records its generator, was trained for) those weights."""
    path = Path(path)
    if not path.is_file():
        raise DirectionError(f"{path}: no such direction file; {_TRAIN_HINT} or check the path")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        data = None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DirectionError(f"{path}: not a readable .npz direction file; {_TRAIN_HINT} again")
    with data:
        meta = _metadata(data, path)
        vector = _float_array(data, "vector", path)
        center = _float_array(data, "center", path) if "center" in data.files else None
    bad_meta = DirectionError(f"{path}: 'meta' lacks a valid attribute, space, rows, offset, metrics or "
                              f"generator record; {_TRAIN_HINT} again")
    try:
        space, rows, offset, attribute = meta["space"], meta["rows"], meta["offset"], meta["attribute"]
        ref = None if meta.get("generator") is None else GeneratorRef(**meta["generator"])
        metrics = {k: math.nan if v is None else float(v) for k, v in (meta.get("metrics") or {}).items()
                   if k in METRICS}
        counts = {k: int(meta.get(k, 0)) for k in ("n_samples", "n_positive", "n_negative", "seed")}
        conditioned_on = [str(a) for a in meta.get("conditioned_on") or []]
        settings = dict(meta.get("settings") or {})
    except (KeyError, TypeError, ValueError, AttributeError):
        raise bad_meta from None
    rows_ok = rows is None or (isinstance(rows, list) and rows != [] and len(set(rows)) == len(rows)
                               and all(isinstance(r, int) and r >= 0 for r in rows))
    if (space not in SPACES or not isinstance(attribute, str) or not rows_ok
            or not isinstance(offset, (int, float)) or not math.isfinite(offset)):
        raise bad_meta
    expected_ndim = 1 if space == "w" else 2
    if vector.ndim != expected_ndim or (space == "w+" and (rows is None or len(rows) != vector.shape[0])):
        raise DirectionError(f"{path}: a '{space}' direction over rows {rows} cannot have a vector of shape "
                             f"{vector.shape}; {_TRAIN_HINT} again")
    if center is not None and center.shape != vector.shape:
        raise DirectionError(f"{path}: 'center' has shape {center.shape}, the vector {vector.shape}; "
                             f"{_TRAIN_HINT} again")
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(norm - 1) > UNIT_TOLERANCE:
        raise DirectionError(f"{path}: the direction vector has norm {norm:.6g}, not 1; {_TRAIN_HINT} again "
                             "(do not scale stored directions, use an edit strength)")
    if ref is not None and (vector.shape[-1] != ref.w_dim or max(rows or [0]) >= ref.num_ws):
        raise DirectionError(f"{path}: vector {vector.shape} on rows {rows} does not match its own generator "
                             f"record ([{ref.num_ws}, {ref.w_dim}] ws); {_TRAIN_HINT} again")
    if generator is not None:
        expected = GeneratorRef.from_info(generator)
        made_for = f"'{ref.name}'" if ref is not None else "another generator"
        if vector.shape[-1] != expected.w_dim or max(rows or [0]) >= expected.num_ws:
            raise DirectionError(f"{path}: made for {made_for} (w_dim {vector.shape[-1]}, rows {rows}), which does "
                                 f"not fit '{expected.name}' ([{expected.num_ws}, {expected.w_dim}] ws); use a "
                                 "direction trained for this generator")
        if ref is not None and ref.weights_sha256 != expected.weights_sha256:
            raise DirectionError(f"{path}: made for '{ref.name}' (weights {ref.weights_sha256[:12]}), not for "
                                 f"'{expected.name}' (weights {expected.weights_sha256[:12]}); pass the network it "
                                 f"was trained on or {_TRAIN_HINT} for this one")
    return Direction(attribute=attribute, vector=vector, space=space, rows=rows, offset=float(offset),
                     center=center, **metrics, **counts, generator=ref, conditioned_on=conditioned_on,
                     labeler=str(meta.get("labeler", "")), method=str(meta.get("method", "")), settings=settings,
                     tool_version=str(meta.get("tool_version", "")))


def load_directions(paths: Sequence[str | Path], generator: GeneratorInfo | None = None) -> list[Direction]:
    """:func:`load_direction` for each path, in order."""
    return [load_direction(p, generator) for p in paths]
