"""What the web editor does for one visitor, with no HTTP in it: a photo in, its alignment shown, the inversion
followed step by step, a latent edited and rendered from any view, and the files to download.

Every operation is a library call with the CLI's defaults: ``invert_photos`` (``stylenerf-edit invert``),
``edit_latent`` + ``render_latent`` (what ``edit`` renders), ``check_edits`` (``edit``'s range warnings) and
``edit_latent_file`` (``edit --sweep --camera``, for the downloads). :class:`EditorModel` holds what every
visitor shares (the generator, its directions and their sample ranges); :class:`Workspace` holds one visitor's
files, all inside its own folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from stylenerf_edit.directions.direction import Direction, load_direction
from stylenerf_edit.directions.library import available_directions
from stylenerf_edit.editing.edit import ROW_GROUPS, Edit, SampleRange, check_edits, edit_latent, row_group, sample_range
from stylenerf_edit.editing.outputs import edit_latent_file, render_latent
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import load_with_info, resolve_device
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.images import save_png
from stylenerf_edit.invert.align import draw_alignment
from stylenerf_edit.invert.latent import Latent, load_latent
from stylenerf_edit.invert.photo import load_photo
from stylenerf_edit.invert.pipeline import InvertOptions, StepReport, invert_photos, prepare_photo
from stylenerf_edit.invert.pti import TUNING_NAME, TuningConfig, tuned_for_latent
from stylenerf_edit.invert.settings import InversionConfig

# A visitor's photo: at most this many pixels (a 48-megapixel phone photo fits; decompression bombs do not).
MAX_PHOTO_PIXELS = 50_000_000
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class EditorError(StyleNerfEditError):
    """Something a visitor asked for cannot be done; the message is shown in the page."""


@dataclass(frozen=True)
class Slider:
    """One direction as the page shows it: its name, the rows it edits by default and where the model's own
    samples lie along it (strength units, from their mean)."""

    name: str
    rows: str
    low: float
    high: float


class EditorModel:
    """The generator, its directions (the model's own, then ``directions`` folders) and their sample ranges,
    loaded once and shared by every visitor."""

    def __init__(self, network: str | Path = "bundled:heads", directions: Sequence[str | Path] = (),
                 device: str | None = None):
        self.network = str(network)
        self.extra_dirs = tuple(str(d) for d in directions)
        self.G, self.info = load_with_info(network, device=resolve_device(device))
        self.directions: dict[str, Direction] = {
            name: load_direction(path, generator=self.info)
            for name, path in available_directions(network, self.extra_dirs).items()}
        self.ranges: dict[str, SampleRange] = {d.attribute: sample_range(self.G, d) for d in self.directions.values()}

    def sliders(self) -> list[Slider]:
        out = []
        for name, d in self.directions.items():
            rows = row_group(self.G.cfg, "all") if d.rows is None else sorted(d.rows)
            r = self.ranges[d.attribute]
            out.append(Slider(name, _describe_rows(self.G, rows), r.low, r.high))
        return out

    def edits(self, strengths: dict[str, float], rows: str | None) -> list[Edit]:
        """``{name: strength}`` (zeros dropped) on ``rows`` (a group of ``ROW_GROUPS``; None: each direction's
        own rows) as library edits."""
        if rows is not None and rows not in ROW_GROUPS:
            raise EditorError(f"rows {rows!r}: choose one of {', '.join(ROW_GROUPS)}")
        chosen = None if rows is None else tuple(row_group(self.G.cfg, rows))
        edits = []
        for name, strength in strengths.items():
            if name not in self.directions:
                raise EditorError(f"no direction named {name!r} for {self.info.name}")
            if not np.isfinite(strength) or abs(strength) > 10:
                raise EditorError(f"{name}: strength {strength!r} must be a number from -10 to 10")
            if strength:
                edits.append(Edit(self.directions[name], float(strength), chosen))
        return edits


def _describe_rows(G: Generator, rows: list[int]) -> str:
    for group in ROW_GROUPS:
        if row_group(G.cfg, group) == rows:
            return group
    return ",".join(str(r) for r in rows)


@dataclass
class View:
    """What the page asks to see: strengths by direction name, the row group, the camera in degrees."""

    strengths: dict[str, float] = field(default_factory=dict)
    rows: str | None = None
    yaw: float | None = None        # None: the latent's own
    pitch: float | None = None


@dataclass
class Rendered:
    image: np.ndarray                 # uint8 [R, R, 3]
    warnings: list[str]


class Workspace:
    """One visitor's photo, latent and outputs, every file inside ``folder``."""

    def __init__(self, model: EditorModel, folder: str | Path):
        self.model = model
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.photo: Path | None = None
        self.photo_name = ""
        self.aligned = False
        self.latent: Latent | None = None
        self.latent_path: Path | None = None
        self.G: Generator = model.G
        self._exports = 0
        self._uploads = 0

    # -- photo -------------------------------------------------------------------------------------------------
    def add_photo(self, data: bytes, filename: str, aligned: bool = False) -> dict[str, Path]:
        """Keep an uploaded photo and align it: returns ``alignment.png`` (the photo with the crop and the
        detection drawn) and ``crop.png`` (what the generator will be fitted to)."""
        suffix = Path(filename).suffix.lower()
        self._uploads += 1
        folder = self.folder / "photo"
        folder.mkdir(exist_ok=True)
        target = folder / f"upload{self._uploads}{suffix if suffix in PHOTO_SUFFIXES else ''}"
        target.write_bytes(data)
        try:
            files = self.use_photo(target, aligned, name=filename)
        except EditorError:
            target.unlink()          # the photo chosen before stays chosen
            raise
        for old in folder.iterdir():
            if old != target:
                old.unlink()
        return files

    def use_photo(self, path: Path, aligned: bool, name: str | None = None) -> dict[str, Path]:
        """Align ``path`` (a file inside the workspace or a shipped sample) as ``invert`` will."""
        shown = name or path.name
        try:
            image = load_photo(path, max_pixels=MAX_PHOTO_PIXELS)
            prepared = prepare_photo(path, self.G.img_resolution, aligned=aligned)
        except StyleNerfEditError as e:
            raise EditorError(str(e).replace(str(path), shown)) from None
        self.photo, self.aligned, self.photo_name = path, aligned, shown
        self.latent, self.latent_path, self.G = None, None, self.model.G     # a new photo: its latent comes next
        preview = self.folder / "preview"
        preview.mkdir(exist_ok=True)
        return {"alignment": save_png(draw_alignment(image, prepared.face), preview / "alignment.png"),
                "crop": save_png(prepared.face.image, preview / "crop.png")}

    def invert(self, steps: int = InversionConfig.steps, pti: bool = False,
               monitor: Callable[[StepReport], None] | None = None) -> dict[str, object]:
        """Invert the photo (``invert`` with its defaults but ``steps``; ``pti`` adds ``--pti``) and open its latent;
        returns the fit's metrics and warnings."""
        if self.photo is None:
            raise EditorError("choose a photo first")
        out = self.folder / "inversion"
        if out.exists():
            shutil.rmtree(out)
        options = InvertOptions(config=InversionConfig(steps=steps), aligned=self.aligned,
                                pti=TuningConfig() if pti else None)
        (outcome,) = invert_photos([self.photo], out, self.model.network, options, progress=False, monitor=monitor)
        if outcome.error:
            raise EditorError(self._shown(outcome.error))
        self.open_latent(outcome.out_dir / "latent.npz")
        return {"metrics": outcome.metrics, "warnings": [self._shown(w) for w in outcome.warnings]}

    def _shown(self, message: str) -> str:
        """A library message about the photo, naming it as the visitor knows it (not by its server path)."""
        return message.replace(str(self.photo), self.photo_name) if self.photo is not None else message

    # -- latent ------------------------------------------------------------------------------------------------
    def add_latent(self, data: bytes, tuning: bytes | None = None) -> Latent:
        """Keep an uploaded ``latent.npz`` (and its ``tuning.safetensors``) and open it."""
        folder = self.folder / "opened"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        (folder / "latent.npz").write_bytes(data)
        if tuning is not None:
            (folder / TUNING_NAME).write_bytes(tuning)
        return self.open_latent(folder / "latent.npz", shown="the uploaded latent")

    def add_tuning(self, data: bytes) -> Latent:
        """Keep an uploaded ``tuning.safetensors`` beside the uploaded latent and reopen it, tuned."""
        path = self.folder / "opened" / "latent.npz"
        if self.latent_path != path:
            raise EditorError("open the latent file this tuning belongs to first")
        (path.parent / TUNING_NAME).write_bytes(data)
        try:
            return self.open_latent(path, shown="the uploaded latent")
        except EditorError:
            (path.parent / TUNING_NAME).unlink()
            self.open_latent(path, shown="the uploaded latent")
            raise

    def open_latent(self, path: Path, shown: str | None = None) -> Latent:
        """Open a latent of this model (and its pivotal tuning, when one lies beside it)."""
        try:
            latent = load_latent(path, generator=self.model.info)
            G = tuned_for_latent(self.model.G, path, latent, self.model.info.weights_sha256)
        except StyleNerfEditError as e:
            raise EditorError(str(e).replace(str(path), shown or path.name)) from None
        self.latent, self.latent_path, self.G = latent, path, G
        return latent

    def _require_latent(self) -> Latent:
        if self.latent is None:
            raise EditorError("invert a photo or open a latent first")
        return self.latent

    def camera(self, view: View) -> Camera:
        latent = self._require_latent()
        yaw = latent.camera.yaw if view.yaw is None else view.yaw
        pitch = latent.camera.pitch if view.pitch is None else view.pitch
        for what, value in (("yaw", yaw), ("pitch", pitch)):
            if not np.isfinite(value) or abs(value) > 90:
                raise EditorError(f"{what} {value!r} must be a number of degrees from -90 to 90")
        return latent.camera.with_(yaw=float(yaw), pitch=float(pitch))

    # -- editing -----------------------------------------------------------------------------------------------
    def render(self, view: View, preview: bool = False) -> Rendered:
        """The latent with ``view``'s edits from ``view``'s camera: what ``edit`` renders (or its half-resolution
        ``preview``, see ``render_latent``), and its warnings."""
        latent = self._require_latent()
        edits = self.model.edits(view.strengths, view.rows)
        camera = self.camera(view)
        edited = edit_latent(latent, edits) if edits else latent
        image = render_latent(self.G, edited, [camera], preview=preview)[0]
        checks = check_edits(self.G, torch.from_numpy(latent.ws), edits, self.model.ranges) if edits else []
        return Rendered(image, [f"{c.describe()}; it may leave what the model learnt" for c in checks if not c.inside])

    def export(self, view: View) -> dict[str, Path]:
        """``edit LATENT --edit ... --rows ... --camera YAW,PITCH --sweep`` into a fresh folder: the edited latent,
        edited.png, before_after.png, sweep.gif and sweep.mp4, by name."""
        self._require_latent()
        camera = self.camera(view)
        self.model.edits(view.strengths, view.rows)       # refused here, in the page's words, when invalid
        self._exports += 1
        out = self.folder / f"export{self._exports}"
        specs = [f"{name}={float(s)!r}" for name, s in view.strengths.items() if s]
        result = edit_latent_file(self.latent_path, specs, out, network=self.model.network, rows=view.rows,
                                  directions=self.model.extra_dirs, sweep=True, camera=(camera.yaw, camera.pitch),
                                  device=str(self.model.G.device))
        return {p.name: p for p in result.files if p.suffix != ".json"}
