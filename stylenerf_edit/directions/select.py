"""Which samples a direction is learnt from: the extremes of a score, and their seeded train/validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .direction import DirectionError


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


def split_extremes(s: np.ndarray, ratio: float | None, count: int | None, split: float, seed: int,
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
