"""Conditional directions: a normal with the span of other attributes' normals removed."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from .direction import Direction, DirectionError


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
