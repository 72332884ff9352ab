"""Attribute scores for sample images: the labels that edit directions are fitted to.

Every labeler is a :class:`Labeler`: ``name`` (also the label file's name), ``attributes`` and
``labeler(images [N, H, W, 3] uint8, indices [N] | None) -> {attribute: float64 [N]}``, NaN where a score cannot
be computed (no face found, a sample missing from a score file). Implementations:

* :class:`PredictorLabeler` - the bundled procedural-world attribute predictor (``bundled:heads`` samples).
* :class:`LandmarkLabeler` - dlib's 68 landmarks on real faces: smile, mouth opening, head yaw and pitch.
* :class:`FileLabeler` - scores the user supplies in a CSV or NPY file, by sample index.
* :class:`ClipLabeler` - zero-shot scores from a pair of CLIP prompts per attribute (optional ``open_clip``).

:func:`make_labeler` builds one from a command-line spec; :func:`label_samples` labels a sample folder
(``directions.sample``) and stores ``labels_<name>.npz`` in it:

    <attribute>   float64 [n]         one entry per attribute (``meta`` is reserved), sample i at row i
    meta          unicode []          JSON: format "stylenerf-edit-labels", format_version 1, labeler, fingerprint,
                                      attributes, n, samples_key (the sample folder's key), tool_version

Labelling resumes per chunk: ``labels_<name>.parts/chunk_NNNNN.npz`` holds the scores of one sample chunk,
stamped with the labeler's fingerprint and the folder's key; a rerun labels only the chunks without a valid part
and then re-assembles the label file. Parts are kept so that growing the sample folder labels only the new chunks;
deleting the parts folder is safe (it only costs relabelling). Label files and parts are read under a budget
(``files.NpzReader``): at most ``MAX_ATTRIBUTES`` entries, each declaring exactly one float per sample.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from stylenerf_edit import __version__
from stylenerf_edit.errors import one_line
from stylenerf_edit.files import NpzError, NpzReader, save_npz
from stylenerf_edit.progress import Progress
from stylenerf_edit.invert.landmarks import detect_faces
from stylenerf_edit.invert.pose import PoseError, raw_pose_from_landmarks
from stylenerf_edit.synthetic.predictor import ATTRIBUTES, WEIGHTS_NAME, AttributePredictor, bundled_dir

from .labeler import Labeler, LabelerError, check_images
from .sample import chunk_ranges, load_chunk, read_meta

LABELS_FORMAT = "stylenerf-edit-labels"
LABELS_FORMAT_VERSION = 1
MAX_ATTRIBUTES = 64
_META_BUDGET = 1 << 20         # the JSON stamp beside the scores
SPEC_HELP = ("predictor[:DIR] | landmarks | age | gender | smile | file:PATH[@ATTR,...] | "
             "clip:ATTR=POSITIVE PROMPT|NEGATIVE PROMPT[;ATTR=...]")
_CLIP_INSTALL = "pip install open_clip_torch"
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class PredictorLabeler(Labeler):
    """The bundled attribute predictor (``synthetic.predictor``): smile [-1, 1], age [0, 1], glasses probability,
    hair_color [0, 1], yaw and pitch in degrees. Meaningful only for the procedural world (``bundled:heads``)."""

    name = "predictor"
    attributes = ATTRIBUTES

    def __init__(self, directory: str | Path | None = None, batch_size: int = 256, device: str = "cpu"):
        self.directory = Path(directory) if directory is not None else bundled_dir()
        self.model = AttributePredictor.from_pretrained(self.directory).to(device)
        self.device = device
        self.batch_size = batch_size
        self._weights_sha256 = hashlib.sha256((self.directory / WEIGHTS_NAME).read_bytes()).hexdigest()

    @property
    def fingerprint(self) -> str:
        return json.dumps({"name": self.name, "weights_sha256": self._weights_sha256})

    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        check_images(images)
        parts: dict[str, list[np.ndarray]] = {a: [] for a in self.attributes}
        for s in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[s:s + self.batch_size])).to(self.device)
            # u / 127.5 - 1 is the centre of the interval that ``images.to_uint8`` maps to u.
            x = batch.permute(0, 3, 1, 2).float() / 127.5 - 1
            for a, v in self.model.predict(x).items():
                parts[a].append(v.double().cpu().numpy())
        return {a: np.concatenate(v) if v else np.zeros(0) for a, v in parts.items()}


# Rough neutral-face values in units of the eye-centre distance (mouth about 50 mm wide, eye centres about 63 mm
# apart; a closed neutral mouth has its corners level with the upper lip's inner edge) and typical spreads. They
# only set the zero and the unit of the smile score, which is used as a regression target.
_NEUTRAL_WIDTH, _WIDTH_SPREAD = 0.80, 0.10
_NEUTRAL_LIFT, _LIFT_SPREAD = 0.0, 0.04


def mouth_scores(landmarks: np.ndarray) -> dict[str, float]:
    """Smile and mouth opening from 68 iBUG landmarks [68, 2] (x, y pixels), in a face frame that undoes roll.

    With ``d`` the distance between the eye centres (means of points 36-41 and 42-47) and ``y`` pointing down
    perpendicular to the eye line:

    * ``width = |p54 - p48| / d``: mouth-corner distance; smiles widen the mouth.
    * ``lift = (y of the upper inner lip 61-63 - y of the corners 48, 54) / d``: how far the corners sit above the
      upper lip's inner edge. Smiles raise the corners; an opening jaw moves the lower lip, not this reference,
      so a yawn or an "o" does not count as a smile.
    * ``smile = ((width - 0.80) / 0.10 + (lift - 0.0) / 0.04) / 2``: the mean of both cues in units of their
      typical spread; about 0 for a neutral face, 2 or more for a broad smile, negative for drooping corners.
    * ``mouth_open = mean gap between the inner lips (61-67, 62-66, 63-65) / mouth width``: 0 for closed lips,
      about 0.15 for a toothy smile, more for a wide-open mouth.
    """
    p = np.asarray(landmarks, dtype=np.float64)
    right_eye, left_eye = p[36:42].mean(0), p[42:48].mean(0)
    d = float(np.linalg.norm(left_eye - right_eye))
    width_px = float(np.linalg.norm(p[54] - p[48]))
    if not (d > 0 and width_px > 0):
        return {"smile": math.nan, "mouth_open": math.nan}
    x_axis = (left_eye - right_eye) / d
    y = (p - right_eye) @ np.array([-x_axis[1], x_axis[0]])   # image rows rotated into the face frame
    lift = (y[61:64].mean() - 0.5 * (y[48] + y[54])) / d
    width = width_px / d
    gap = float(np.mean(y[[67, 66, 65]] - y[[61, 62, 63]]))
    smile = 0.5 * ((width - _NEUTRAL_WIDTH) / _WIDTH_SPREAD + (lift - _NEUTRAL_LIFT) / _LIFT_SPREAD)
    return {"smile": float(smile), "mouth_open": gap / width_px}


class LandmarkLabeler(Labeler):
    """Real faces through dlib's 68 landmarks (the largest face of each image): ``smile`` and ``mouth_open``
    (:func:`mouth_scores`), ``yaw`` and ``pitch`` in degrees (uncalibrated ``invert.pose.raw_pose_from_landmarks``,
    treating the image, padded to a square, as seen with ``fov`` degrees: 12 for FFHQ-style crops). NaN where no
    face is found. Images whose short side is below ``min_size`` are upscaled first (dlib needs ~80 px faces)."""

    name = "landmarks"
    attributes = ("smile", "mouth_open", "yaw", "pitch")

    def __init__(self, fov: float = 12.0, min_size: int = 256):
        self.fov = fov
        self.min_size = min_size

    @property
    def fingerprint(self) -> str:
        return json.dumps({"name": self.name, "version": 1, "fov": self.fov, "min_size": self.min_size})

    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        check_images(images)
        out = {a: np.full(len(images), np.nan) for a in self.attributes}
        for i, image in enumerate(images):
            for a, v in self.score(image).items():
                out[a][i] = v
        return out

    def score(self, image: np.ndarray) -> dict[str, float]:
        """Scores of one uint8 [H, W, 3] image (NaN without a face)."""
        h, w = image.shape[:2]
        factor = max(1.0, self.min_size / min(h, w))
        if factor > 1:
            size = (round(w * factor), round(h * factor))
            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BICUBIC))
        faces = detect_faces(image)
        if not faces:
            return dict.fromkeys(self.attributes, math.nan)
        landmarks = faces[0].landmarks
        scores = mouth_scores(landmarks)
        h, w = image.shape[:2]
        side = max(h, w)
        try:
            # Pad to a square around the image centre, the principal point the pose solver assumes.
            scores["yaw"], scores["pitch"] = raw_pose_from_landmarks(landmarks + [(side - w) / 2, (side - h) / 2],
                                                                     side, self.fov)
        except PoseError:
            scores["yaw"] = scores["pitch"] = math.nan
        return scores


def _float_cell(text: str, where: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "na", "n/a"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise LabelerError(f"{where}: {text!r} is not a number; write numbers (empty or NaN for no score)") from None


class FileLabeler(Labeler):
    """Scores supplied by the user, one per sample index.

    ``.csv``: a header row naming the columns; every column is an attribute except an optional ``index`` column
    giving each row's sample index (without it, row i is sample i and the file must have one row per sample;
    with it, samples not listed get NaN). Empty cells and ``NaN`` mean "no score".
    ``.npy``: float [N] (one attribute, named ``attribute`` or after the file) or [N, K] with ``attribute``
    naming the K columns (a sequence or a comma-separated string). Row i is sample i.

    ``attribute`` selects CSV columns (default: all). The labeler ignores the images.
    """

    reads_images = False

    def __init__(self, path: str | Path, attribute: str | Sequence[str] | None = None):
        self.path = Path(path)
        wanted = [a.strip() for a in attribute.split(",")] if isinstance(attribute, str) else \
            (list(attribute) if attribute is not None else None)
        if not self.path.is_file():
            raise LabelerError(f"{self.path}: no such score file; pass an existing .csv or .npy file")
        suffix = self.path.suffix.lower()
        if suffix == ".csv":
            self.index, self.scores = self._read_csv(wanted)
        elif suffix == ".npy":
            self.index, self.scores = None, self._read_npy(wanted)
        else:
            raise LabelerError(f"{self.path}: unsupported score file type {suffix or '(none)'!r}; use .csv or .npy")
        self.attributes = tuple(self.scores)
        self.rows = len(next(iter(self.scores.values())))
        self._row_of = {} if self.index is None else {int(i): r for r, i in enumerate(self.index)}
        self.name = "file-" + re.sub(r"[^A-Za-z0-9._-]+", "_", self.path.stem)
        self._sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def fingerprint(self) -> str:
        return json.dumps({"name": self.name, "attributes": list(self.attributes), "sha256": self._sha256})

    def _read_csv(self, wanted: list[str] | None) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise LabelerError(f"{self.path}: unreadable CSV ({type(e).__name__}: {one_line(e)}); save it as "
                               "UTF-8 text with a header row") from None
        if len(rows) < 2:
            raise LabelerError(f"{self.path}: needs a header row and at least one row of scores")
        header = [h.strip() for h in rows[0]]
        if "" in header or len(set(header)) != len(header):
            raise LabelerError(f"{self.path}: the header row must name every column once, got {header}")
        columns = [h for h in header if h != "index"]
        if wanted is not None:
            missing = [a for a in wanted if a not in columns]
            if missing:
                raise LabelerError(f"{self.path}: no column {', '.join(map(repr, missing))}; columns are "
                                   f"{', '.join(columns) or '(none)'}")
            columns = wanted
        if not columns:
            raise LabelerError(f"{self.path}: no score columns besides 'index'")
        values = np.empty((len(rows) - 1, len(header)))
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise LabelerError(f"{self.path}, line {line}: {len(row)} fields, the header has {len(header)}")
            values[line - 2] = [_float_cell(cell, f"{self.path}, line {line}, column {h!r}")
                                for cell, h in zip(row, header)]
        index = None
        if "index" in header:
            raw = values[:, header.index("index")]
            if not (np.isfinite(raw).all() and (raw >= 0).all() and (raw == np.round(raw)).all()):
                raise LabelerError(f"{self.path}: the 'index' column must hold sample indices (integers >= 0)")
            index = raw.astype(np.int64)
            if len(np.unique(index)) != len(index):
                raise LabelerError(f"{self.path}: the 'index' column lists a sample twice")
        return index, {c: values[:, header.index(c)] for c in columns}

    def _read_npy(self, wanted: list[str] | None) -> dict[str, np.ndarray]:
        try:
            array = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise LabelerError(f"{self.path}: unreadable .npy file ({type(e).__name__}); save the scores with "
                               "numpy.save as a float array [N] or [N, K]") from None
        if array.dtype.kind not in "fiub" or array.ndim not in (1, 2) or len(array) == 0:
            raise LabelerError(f"{self.path}: scores must be a non-empty numeric array [N] or [N, K], got "
                               f"{array.dtype} {list(array.shape)}")
        array = array.astype(np.float64).reshape(len(array), -1)
        names = wanted if wanted is not None else ([self.path.stem] if array.shape[1] == 1 else None)
        if names is None or len(names) != array.shape[1] or len(set(names)) != len(names):
            raise LabelerError(f"{self.path}: holds {array.shape[1]} score columns; name each once "
                               f"(file:{self.path}@name1,name2,... or attribute=[...])")
        return {a: array[:, k] for k, a in enumerate(names)}

    def check_size(self, n: int) -> None:
        if self.index is None and self.rows != n:
            raise LabelerError(f"{self.path}: has {self.rows} rows of scores for {n} samples; give one row per "
                               "sample, or add an 'index' column")
        if self.index is not None and self.index.max() >= n:
            raise LabelerError(f"{self.path}: lists sample {int(self.index.max())}, but there are only {n} samples "
                               f"(0..{n - 1})")

    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.index is None:
            if indices.size and indices.max() >= self.rows:
                raise LabelerError(f"{self.path}: has {self.rows} rows of scores, sample {int(indices.max())} "
                                   "asked for; give one row per sample")
            return {a: v[indices].copy() for a, v in self.scores.items()}
        picked = np.array([self._row_of.get(int(i), -1) for i in indices], dtype=np.int64)
        return {a: np.where(picked >= 0, v[np.maximum(picked, 0)], np.nan) for a, v in self.scores.items()}


class ClipLabeler(Labeler):
    """Zero-shot scores from CLIP (``open_clip``): per attribute a (positive, negative) prompt pair.

    Score = p(positive) - p(negative) in [-1, 1], the two-way softmax of CLIP's scaled cosine similarities
    (``tanh(logit_scale * (cos_pos - cos_neg) / 2)``): monotone in the cosine-similarity difference but, unlike
    it, on a fixed scale. Needs ``pip install open_clip_torch``; the weights (``model``, ``pretrained``) are
    downloaded once on first use.
    """

    name = "clip"

    def __init__(self, prompts: Mapping[str, tuple[str, str]], model: str = "ViT-B-32",
                 pretrained: str = "laion2b_s34b_b79k", device: str = "cpu", batch_size: int = 32):
        if not prompts or not all(isinstance(p, (tuple, list)) and len(p) == 2 and all(str(t).strip() for t in p)
                                  for p in prompts.values()):
            raise LabelerError("CLIP labels need, per attribute, a positive and a negative prompt, e.g. "
                               "clip:smile=a smiling face|a face with a neutral expression")
        self.prompts = {a: (str(p[0]), str(p[1])) for a, p in prompts.items()}
        self.attributes = tuple(self.prompts)
        self.model_name, self.pretrained, self.device, self.batch_size = model, pretrained, device, batch_size
        try:
            import open_clip
        except ImportError:
            raise LabelerError(f"CLIP labels need the optional open_clip package: {_CLIP_INSTALL}") from None
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained,
                                                                                   device=device)
        except Exception as e:  # download (URLError, HTTPError, hub errors) or load failure: all mean "unusable"
            raise LabelerError(f"CLIP model {model} ({pretrained}) could not be loaded ({type(e).__name__}: "
                               f"{one_line(e)}); it needs a one-time download of its weights, so run it once with "
                               "network access") from None
        self.model.eval()
        tokens = open_clip.get_tokenizer(model)([t for pair in self.prompts.values() for t in pair]).to(device)
        with torch.no_grad():
            text = self.model.encode_text(tokens).float()
        self.text = torch.nn.functional.normalize(text, dim=-1)          # [2A, D]: (pos, neg) per attribute
        self.logit_scale = float(self.model.logit_scale.exp())

    @property
    def fingerprint(self) -> str:
        return json.dumps({"name": self.name, "model": self.model_name, "pretrained": self.pretrained,
                           "prompts": self.prompts})

    @torch.no_grad()
    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        check_images(images)
        diffs = []
        for s in range(0, len(images), self.batch_size):
            x = torch.stack([self.preprocess(Image.fromarray(im)) for im in images[s:s + self.batch_size]])
            emb = torch.nn.functional.normalize(self.model.encode_image(x.to(self.device)).float(), dim=-1)
            cos = (emb @ self.text.T).view(len(x), -1, 2)               # [B, A, (pos, neg)]
            diffs.append(torch.tanh(0.5 * self.logit_scale * (cos[..., 0] - cos[..., 1])).double().cpu())
        scores = torch.cat(diffs).numpy() if diffs else np.zeros((0, len(self.attributes)))
        return {a: scores[:, k].copy() for k, a in enumerate(self.attributes)}


def _parse_clip(body: str) -> dict[str, tuple[str, str]]:
    prompts: dict[str, tuple[str, str]] = {}
    for item in filter(str.strip, body.split(";")):
        attr, eq, pair = item.partition("=")
        texts = pair.split("|")
        if not eq or not attr.strip() or len(texts) != 2 or not all(t.strip() for t in texts):
            raise LabelerError(f"bad CLIP labeler item {item.strip()!r}: write ATTR=POSITIVE PROMPT|NEGATIVE PROMPT, "
                               "items separated by ';'")
        if attr.strip() in prompts:
            raise LabelerError(f"CLIP labeler spec names attribute {attr.strip()!r} twice")
        prompts[attr.strip()] = (texts[0].strip(), texts[1].strip())
    if not prompts:
        raise LabelerError("empty CLIP labeler spec; write clip:ATTR=POSITIVE PROMPT|NEGATIVE PROMPT")
    return prompts


def make_labeler(spec: str) -> Labeler:
    """Build a labeler from a command-line spec:

    * ``predictor`` or ``predictor:DIR`` - :class:`PredictorLabeler` (bundled, or weights in DIR);
    * ``landmarks`` - :class:`LandmarkLabeler`;
    * ``age``, ``gender``, ``smile`` - real faces through networks that ship in registry packages
      (``directions.face_labelers``);
    * ``file:PATH`` or ``file:PATH@ATTR[,ATTR...]`` - :class:`FileLabeler` (the ``@`` part selects CSV columns or
      names NPY columns; a PATH that exists as a whole is taken as the path even if it contains ``@``);
    * ``clip:ATTR=POSITIVE|NEGATIVE[;ATTR=POSITIVE|NEGATIVE...]`` - :class:`ClipLabeler`, e.g.
      ``clip:smile=a photo of a smiling person|a photo of a person with a neutral expression``.
    """
    kind, _, body = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "predictor":
        return PredictorLabeler(body or None)
    if kind == "landmarks" and not body:
        return LandmarkLabeler()
    if kind in ("age", "gender", "smile") and not body:
        from .face_labelers import make_face_labeler

        return make_face_labeler(kind)
    if kind == "file" and body:
        if "@" in body and not Path(body).exists():
            path, _, attrs = body.rpartition("@")
            return FileLabeler(path, attrs)
        return FileLabeler(body)
    if kind == "clip":
        return ClipLabeler(_parse_clip(body))
    raise LabelerError(f"unknown labeler {spec!r}; use one of: {SPEC_HELP}")


def make_labelers(spec: str) -> list[Labeler]:
    """Several labelers from ``NAME,NAME,...`` (e.g. ``age,gender,smile``), or one from any :func:`make_labeler`
    spec (``clip:`` and ``file:`` specs may hold commas of their own)."""
    names = [item.strip() for item in spec.split(",")]
    if ":" in spec or not all(names):
        return [make_labeler(spec)]
    if len(set(names)) != len(names):
        raise LabelerError(f"--labeler {spec!r} names a labeler twice")
    return [make_labeler(name) for name in names]


def _labels_path(directory: Path, name: str) -> Path:
    return directory / f"labels_{name}.npz"


def _valid_part(path: Path, fingerprint: str, key: str, indices: range,
                attributes: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The stored scores of one chunk, or None when missing, broken or made by another labeler or sample set."""
    try:
        with NpzReader(path, 8 * len(indices) * len(attributes) + _META_BUDGET, len(attributes) + 1) as data:
            stamp = json.loads(str(data.read("meta", "U", ())))
            if stamp != {"fingerprint": fingerprint, "samples_key": key, "start": indices.start}:
                return None
            scores = {a: data.read(a, "f", (len(indices),)) for a in attributes}
    except (NpzError, ValueError, RecursionError):
        return None
    if any(v.dtype != np.float64 for v in scores.values()):
        return None
    return scores


def label_samples(sample_dir: str | Path, labeler: Labeler, progress: bool = True) -> dict[str, np.ndarray]:
    """Score every sample of a folder (``directions.sample``) and store ``labels_<name>.npz`` (module docstring).

    Returns ``{attribute: float64 [n]}``. Resumes from the per-chunk parts of an interrupted run.
    """
    directory = Path(sample_dir)
    meta = read_meta(directory)
    if not _NAME.match(labeler.name):
        raise ValueError(f"labeler name {labeler.name!r} is not a safe file name part")
    fingerprint, attributes = labeler.fingerprint, tuple(labeler.attributes)
    if "meta" in attributes:
        raise LabelerError(f"labeler {labeler.name!r}: 'meta' is a reserved name; rename that attribute")
    if len(attributes) > MAX_ATTRIBUTES:
        raise LabelerError(f"labeler {labeler.name!r}: {len(attributes)} attributes, over the limit of "
                           f"{MAX_ATTRIBUTES}; label fewer at a time")
    labeler.check_size(meta["n"])
    parts_dir = directory / f"labels_{labeler.name}.parts"
    parts_dir.mkdir(exist_ok=True)
    scores: dict[str, list[np.ndarray]] = {a: [] for a in attributes}
    with Progress(meta["n"], f"labelling ({labeler.name})", "image", enabled=progress) as bar:
        for k, indices in enumerate(chunk_ranges(meta)):
            part_path = parts_dir / f"chunk_{k:05d}.npz"
            part = _valid_part(part_path, fingerprint, meta["key"], indices, attributes)
            if part is None:
                chunk = load_chunk(directory, k, meta)
                got = labeler(chunk.images, chunk.indices)
                part = {a: np.asarray(got[a], dtype=np.float64) for a in attributes}
                if any(v.shape != (len(indices),) for v in part.values()):
                    raise ValueError(f"labeler {labeler.name!r} returned scores of the wrong shape for chunk {k}")
                stamp = {"fingerprint": fingerprint, "samples_key": meta["key"], "start": indices.start}
                save_npz(part_path, {**part, "meta": np.array(json.dumps(stamp))})
            for a in attributes:
                scores[a].append(part[a])
            bar.update(len(indices))
    labels = {a: np.concatenate(v) for a, v in scores.items()}
    info = {"format": LABELS_FORMAT, "format_version": LABELS_FORMAT_VERSION, "labeler": labeler.name,
            "fingerprint": fingerprint, "attributes": list(attributes), "n": meta["n"], "samples_key": meta["key"],
            "tool_version": __version__}
    save_npz(_labels_path(directory, labeler.name), {**labels, "meta": np.array(json.dumps(info))})
    return labels


def load_labels(sample_dir: str | Path, name: str) -> dict[str, np.ndarray]:
    """``labels_<name>.npz`` of a sample folder, checked against the folder: ``{attribute: float64 [n]}``."""
    directory = Path(sample_dir)
    meta = read_meta(directory)
    path = _labels_path(directory, name)
    if not path.is_file():
        raise LabelerError(f"{path}: no such label file; label the samples with the {name!r} labeler first")
    try:
        with NpzReader(path, 8 * meta["n"] * MAX_ATTRIBUTES + _META_BUDGET, MAX_ATTRIBUTES + 1) as data:
            info = json.loads(str(data.read("meta", "U", ())))
            if not isinstance(info, dict) or (info.get("format"), info.get("samples_key"), info.get("n")) != (
                    LABELS_FORMAT, meta["key"], meta["n"]):
                raise LabelerError(f"{path}: made for other samples than {directory} now holds; label the samples "
                                   "again")
            labels = {a: data.read(a, "f", (meta["n"],)) for a in info["attributes"]}
    except NpzError as e:
        raise LabelerError(f"{e}; delete it and label the samples again") from None
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise LabelerError(f"{path}: not a readable label file ({type(e).__name__}); delete it and label the "
                           "samples again") from None
    return {a: v.astype(np.float64) for a, v in labels.items()}

