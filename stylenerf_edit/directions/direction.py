"""Edit directions and their file format: a hyperplane in W (or in W+ rows) with how it was made and measured.

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

``load_direction`` reads under a budget (``files.NpzReader``): a file over ``MAX_DIRECTION_BYTES``, or an entry
whose headers declare more, is refused before anything is decompressed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stylenerf_edit import __version__
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import NpzError, NpzReader, save_npz
from stylenerf_edit.generator.checkpoint import GeneratorInfo
from stylenerf_edit.invert.latent import GeneratorRef

FORMAT = "stylenerf-edit-direction"
FORMAT_VERSION = 1
SPACES = ("w", "w+")
METRICS = ("val_accuracy", "remaining_accuracy", "correlation", "score_per_unit", "spread")
UNIT_TOLERANCE = 1e-3          # float32 storage keeps the norm within ~1e-6; more means a foreign or edited file
# A W+ direction over 32 rows of 4096 values, with its center, is 1 MiB: anything much larger is not a direction.
MAX_DIRECTION_BYTES = 16 << 20
_MAX_MEMBERS = 8
_TRAIN_HINT = "train one with `stylenerf-edit directions train`"


class DirectionError(StyleNerfEditError):
    """A direction cannot be trained, combined, applied, or read from its file."""


@dataclass
class Direction:
    """A hyperplane in W (or in a stack of W+ rows) separating low from high scores of one attribute.

    ``vector`` is the unit normal, pointing toward higher scores; with ``offset`` b, ``n . w + b`` is the signed
    distance of w from the plane in W units, so one unit step of :meth:`as_ws_delta` moves it by 1 (for "w":
    on the rows ``distance`` averages). Metrics are NaN where not measured (e.g. after ``conditioning.condition``).
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


def load_direction(path: str | Path, generator: GeneratorInfo | None = None) -> Direction:
    """Read and validate a direction file; with ``generator``, also require that it fits (and, when the file
    records its generator, was trained for) those weights."""
    path = Path(path)
    if not path.is_file():
        raise DirectionError(f"{path}: no such direction file; {_TRAIN_HINT} or check the path")
    try:
        with NpzReader(path, MAX_DIRECTION_BYTES, _MAX_MEMBERS) as data:
            meta = data.read_meta(FORMAT, FORMAT_VERSION, "direction")
            if "vector" not in data:
                raise NpzError(f"{path}: not a stylenerf-edit direction (no 'vector' entry)")
            vector = data.read("vector", "f", finite=True)
            center = data.read("center", "f", finite=True) if "center" in data else None
    except NpzError as e:
        raise DirectionError(f"{e}; {_TRAIN_HINT} again") from None
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
