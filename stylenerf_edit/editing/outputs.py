"""What an edit writes: the edited latent, stills, a before/after sheet over views, a view grid, sweeps.

``edit_latent_file`` is the library side of ``stylenerf-edit edit``; every option has the CLI's default.
Files in ``out_dir``:

    latent.npz          the edited latent (camera and background kept, the edits recorded in its metadata)
    tuning.safetensors  when the original was tuned (``invert --pti``): its tuning, which draws the edit too
    edited.png          the edited face at the latent's own camera
    before_after.png    top row the original, bottom row the edit, one column per yaw in ``yaws``, labelled (one
                        row when there is no edit)
    grid.png            the edit over yaws x pitches (when ``pitches`` is given)
    sweep.gif/.mp4      a yaw sweep of the edit (with ``sweep``)
    edit.json           what wrote these files and their SHA-256: a rerun replaces them only while unchanged

A file of one of these names that the edit did not write (``--out`` pointing at the inversion's folder, with
its ``latent.npz``) is refused before anything is written (``files.OwnedOutputs``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Sequence

import numpy as np
import torch

from stylenerf_edit.files import OwnedOutputs, atomic_path
from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import load_with_info, resolve_device
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.invert.latent import Latent, load_latent, save_latent
from stylenerf_edit.invert.pti import TUNED_AROUND, TUNING_NAME, carry_tuning, tuned_for_latent, tuning_beside
from stylenerf_edit.names import safe_output_names

from .edit import Edit, EditCheck, check_edits, clamp_edits, edit_latent, parse_edit, row_group
from stylenerf_edit.images import contact_sheet, labelled_sheet, pingpong, save_png, write_gif, write_mp4
from .views import render_views, view_grid, yaw_sweep


def edit_folder_names(edits: Sequence[tuple[str, float]]) -> list[str]:
    """The folder of each ``(direction, strength)`` edit: ``smile+2``, or a direction file's stem (``dirs/x.npz``
    at -1: ``x-1``), made safe and unique by ``names.safe_output_names``."""
    wanted = []
    for name, strength in edits:
        path = PurePath(name)
        base = path.stem if path.suffix == ".npz" else path.name
        wanted.append((f"{name}={strength!r}", [f"{base}{strength:+g}"]))
    return safe_output_names(wanted, fallback="edit")


def render_latent(G: Generator, latent: Latent, cameras: Sequence[Camera], preview: bool = False) -> np.ndarray:
    """A latent through every camera -> [N, H, W, 3] uint8; ``preview``: coarse samples only and the upsampler
    stopped at half the resolution, about 2.5x faster (for a view that follows a slider)."""
    ws = torch.from_numpy(latent.ws)[None].to(G.device)
    bg = torch.from_numpy(latent.bg_code)[None].to(G.device)
    if preview:
        return render_views(G, ws, bg, cameras, hierarchical=False, max_resolution=G.img_resolution // 2)
    return render_views(G, ws, bg, cameras)


@dataclass
class EditOutputs:
    """The edited latent, the files written for it, where each edit landed (checked before any clamping) and
    the edits shortened by ``clamp``."""

    latent: Latent
    files: list[Path] = field(default_factory=list)
    checks: list[EditCheck] = field(default_factory=list)
    clamped: list[Edit] = field(default_factory=list)


EDIT_RECORD = "edit.json"


def edit_outputs(out_dir: str | Path, pitches: Sequence[float] | None = None, sweep: bool = False,
                 tuned: bool = False) -> OwnedOutputs:
    """The files an edit writes in ``out_dir`` (see the module docstring), checked: raises
    ``files.OutputExistsError`` when one would replace a file the edit did not write."""
    names = ["latent.npz", *[TUNING_NAME] * tuned, "edited.png", "before_after.png", *["grid.png"] * bool(pitches),
             *["sweep.gif", "sweep.mp4"] * sweep]
    owned = OwnedOutputs(out_dir, EDIT_RECORD, "edit")
    owned.check(names)
    return owned


def write_edit_outputs(G: Generator, original: Latent, edited: Latent, out_dir: str | Path,
                       yaws: Sequence[float] = (-30.0, -15.0, 0.0, 15.0, 30.0),
                       pitches: Sequence[float] | None = None, sweep: bool = False, frames: int = 24,
                       max_yaw: float = 30.0, tuning: str | Path | None = None) -> list[Path]:
    """Write the files listed in the module docstring for an original latent and its edit; ``tuning``: the
    original's tuning file, copied beside the edited latent (which must carry it, :func:`pti.carry_tuning`)."""
    if tuning is not None and TUNED_AROUND not in edited.extra:
        raise ValueError("an edit written with a tuning must carry it: pass carry_tuning(edited, tuning)")
    out = Path(out_dir)
    owned = edit_outputs(out, pitches, sweep, tuned=tuning is not None)
    files = [save_latent(edited, out / "latent.npz")]
    if tuning is not None:
        with atomic_path(out / TUNING_NAME) as tmp:
            shutil.copyfile(tuning, tmp)
        files.append(out / TUNING_NAME)
    else:       # an earlier edit's tuning here would draw this latent with the wrong weights
        owned.discard(TUNING_NAME)
    files += [save_png(render_latent(G, edited, [edited.camera])[0], out / "edited.png")]
    views = [edited.camera.with_(yaw=y) for y in yaws]
    columns = [f"yaw {y:+g}°" for y in yaws]
    applied = edited.extra.get("edits", [])[len(original.extra.get("edits", [])):]
    if applied:
        before, after = render_latent(G, original, views), render_latent(G, edited, views)
        sheet = labelled_sheet([("before", before), ("after\n" + "\n".join(applied), after)], columns)
    else:       # no edit: the latent as it is, one row
        sheet = labelled_sheet([("unedited", render_latent(G, edited, views))], columns)
    files.append(save_png(sheet, out / "before_after.png"))
    if pitches:
        grid = render_latent(G, edited, view_grid(yaws, pitches, edited.camera))
        files.append(save_png(contact_sheet(list(grid), columns=len(yaws)), out / "grid.png"))
    if sweep:
        loop = pingpong(list(render_latent(G, edited, yaw_sweep(frames, max_yaw, edited.camera.pitch,
                                                                 edited.camera))))
        files += [write_gif(loop, out / "sweep.gif"), write_mp4(loop, out / "sweep.mp4", fps=24)]
    info = {"written_by": "stylenerf-edit edit", "edits": edited.extra.get("edits", [])}
    return files + [owned.save_record(files, info)]


def edit_latent_file(latent_path: str | Path, edits: Sequence[str], out_dir: str | Path,
                     network: str | Path = "bundled:heads", rows: str | None = None,
                     directions: Sequence[str | Path] = (), yaws: Sequence[float] = (-30.0, -15.0, 0.0, 15.0, 30.0),
                     pitches: Sequence[float] | None = None, sweep: bool = False, frames: int = 24,
                     max_yaw: float = 30.0, clamp: bool = False, camera: tuple[float, float] | None = None,
                     device: str | None = None) -> EditOutputs:
    """Load a latent, apply ``edits`` (``"smile=2"``; a name from the model's directions or a ``.npz``) on
    ``rows`` (a group or list, see :func:`~stylenerf_edit.editing.edit.row_group`; default: each direction's
    own rows) and write the outputs. Each edit is checked against the range of the model's own samples
    (:func:`~stylenerf_edit.editing.edit.check_edits`); ``clamp`` shortens those that leave it. ``camera``
    (yaw, pitch in degrees) replaces the latent's view: the edited latent keeps it, ``edited.png`` shows it and
    the yaws of the sheet and sweep turn about it."""
    from stylenerf_edit.directions.library import resolve_direction

    G, info = load_with_info(network, device=resolve_device(device))
    original = load_latent(latent_path, generator=info)
    G = tuned_for_latent(G, latent_path, original, info.weights_sha256)   # pivotal tuning, when inverted with it
    tuning = tuning_beside(latent_path)
    if camera is not None:
        original = replace(original, camera=original.camera.with_(yaw=camera[0], pitch=camera[1]))
    chosen = None if rows is None else tuple(row_group(G.cfg, rows))
    parsed = [parse_edit(e) for e in edits]
    applied = [Edit(resolve_direction(name, network, info, directions), strength, chosen) for name, strength in parsed]
    checks = check_edits(G, torch.from_numpy(original.ws), applied)
    outside = [c for c in checks if not c.inside]
    if clamp and outside:
        applied = clamp_edits(checks)
    edited = carry_tuning(edit_latent(original, applied), tuning)
    files = write_edit_outputs(G, original, edited, out_dir, yaws, pitches, sweep, frames, max_yaw, tuning)
    return EditOutputs(edited, files, checks, [e for e, c in zip(applied, checks) if not c.inside] if clamp else [])
