"""The whole job in one call: a photo -> aligned -> camera estimated -> inverted -> edited -> new views.

``run_demo`` (``stylenerf-edit demo``) takes a shipped procedural photo (or any photo), inverts it into the
bundled model (or another generator with directions), applies the smile and age directions in both
senses (each shortened, and labelled so, where it would leave the range of the model's own samples: see
``editing.edit.check_edits``), renders every result from -30 to +30 degrees of yaw, and writes ``overview.png``
(labelled rows) and ``index.html`` beside the inversion's and the edits' own files. Like every command it never replaces a
file it did not write (``demo.json`` and each edit's ``edit.json`` record what it wrote): that is checked
before the inversion starts.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from stylenerf_edit.directions.library import resolve_direction
from stylenerf_edit.editing.edit import Edit, check_edits, clamp_edits, edit_latent, parse_edit
from stylenerf_edit.editing.outputs import edit_folder_names, edit_outputs, render_latent, write_edit_outputs
from stylenerf_edit.images import labelled_sheet, save_png
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import OwnedOutputs, write_text
from stylenerf_edit.generator.camera import Camera
from stylenerf_edit.generator.checkpoint import load_with_info, resolve_device
from stylenerf_edit.invert.latent import load_latent
from stylenerf_edit.invert.optimize import InversionConfig
from stylenerf_edit.invert.pipeline import InvertOptions, invert_photos
from stylenerf_edit.invert.pti import TuningConfig, carry_tuning, tuned_for_latent, tuning_beside
from stylenerf_edit.synthetic.dataset import demo_photos

DEMO_EDITS = ("smile=+2", "smile=-2", "age=+2", "age=-2", "glasses=+2")
TILE = 128
DEMO_RECORD = "demo.json"


@dataclass
class DemoResult:
    out_dir: Path
    overview: Path
    index: Path
    metrics: dict[str, float] = field(default_factory=dict)


def run_demo(out_dir: str | Path = "demo", photo: str | Path | None = None, network: str = "bundled:heads",
             edits: Sequence[str] = DEMO_EDITS, steps: int = InversionConfig.steps,
             yaws: Sequence[float] = (-30.0, -15.0, 0.0, 15.0, 30.0), device: str | None = None,
             progress: bool = True, pti: TuningConfig | None = None) -> DemoResult:
    """Invert ``photo`` (default: a shipped, near-frontal procedural photo, already aligned), edit it and render it;
    with ``pti``, tune the generator around the latent and render and edit with the tuned one."""
    out = Path(out_dir)
    parsed = [parse_edit(spec) for spec in edits]
    folder_names = edit_folder_names(parsed)
    owned = OwnedOutputs(out, DEMO_RECORD, "demo")
    owned.check(["overview.png", "index.html"])
    for folder_name in folder_names:
        edit_outputs(out / folder_name, sweep=True, tuned=pti is not None)
    G, info = load_with_info(network, device=resolve_device(device))
    directions = [resolve_direction(name, network, info) for name, _ in parsed]   # before minutes of inversion
    shipped = photo is None
    photo = Path(photo) if photo is not None else demo_photos()[1]   # the near-frontal one
    options = InvertOptions(config=InversionConfig(steps=steps), aligned=shipped, paste_back=not shipped,
                            pti=pti)
    outcome = invert_photos([photo], out / "inversion", network, options, device=device, progress=progress)[0]
    if outcome.error:
        raise StyleNerfEditError(outcome.error)
    latent = load_latent(outcome.out_dir / "latent.npz", generator=info)
    tuning = tuning_beside(outcome.out_dir / "latent.npz")
    views = [latent.camera.with_(yaw=y) for y in yaws]
    aligned = np.asarray(Image.open(outcome.out_dir / "aligned.png").convert("RGB"))
    recon = np.asarray(Image.open(outcome.out_dir / "reconstruction.png").convert("RGB"))
    rows = [(f"photo | fit ({outcome.metrics['psnr']:.1f} dB)", [aligned, recon])]
    if pti is not None:     # the tuned fit beside the plain one, and everything below rendered by the tuned generator
        tuned_fit = np.asarray(Image.open(outcome.out_dir / "reconstruction_pti.png").convert("RGB"))
        rows = [(f"photo | fit ({outcome.metrics['psnr']:.1f} dB)\n| tuned ({outcome.metrics['pti_psnr']:.1f} dB)",
                 [aligned, recon, tuned_fit])]
        G = tuned_for_latent(G, outcome.out_dir / "latent.npz", latent, info.weights_sha256)
    rows.append(("inverted, new views", list(render_latent(G, latent, views))))
    cards = []
    for (_, strength), direction, folder_name in zip(parsed, directions, folder_names):
        edit = Edit(direction, strength)
        (check,) = check_edits(G, torch.from_numpy(latent.ws), [edit])
        label = edit.describe()
        if not check.inside:    # stay inside what the model learnt
            (edit,) = clamp_edits([check])
            label = f"{label}\nclamped to {edit.strength:+.1f}\n(the model's range)"
        edited = carry_tuning(edit_latent(latent, [edit]), tuning)
        folder = out / folder_name
        write_edit_outputs(G, latent, edited, folder, yaws=yaws, sweep=True, tuning=tuning)
        rows.append((label, list(render_latent(G, edited, views))))
        cards.append((label, folder.relative_to(out)))
    overview = save_png(labelled_sheet(rows, tile=TILE), out / "overview.png")
    index = _write_index(out, photo, outcome.metrics, latent.camera, cards)
    owned.save_record([overview, index], {"written_by": "stylenerf-edit demo", "photo": str(photo)})
    return DemoResult(out, overview, index, outcome.metrics)


def _write_index(out: Path, photo: Path, metrics: dict[str, float], camera: Camera,
                 cards: Sequence[tuple[str, Path]]) -> Path:
    e = html.escape
    items = "\n".join(
        f'<figure><figcaption>{e(label)}</figcaption><img src="{e(str(folder))}/sweep.gif" width="256">'
        f'<img src="{e(str(folder))}/before_after.png" height="128"></figure>' for label, folder in cards)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stylenerf-edit demo</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:1em}}
img{{image-rendering:pixelated}}</style></head><body>
<h1>stylenerf-edit demo</h1>
<p>Photo <code>{e(str(photo))}</code> inverted: PSNR {metrics['psnr']:.2f} dB, LPIPS {metrics['lpips']:.3f};
camera yaw {camera.yaw:+.1f}°, pitch {camera.pitch:+.1f}°.</p>
<img src="overview.png">
<h2>Edits (yaw sweeps and before/after)</h2>
{items}
<h2>Files</h2>
<p><a href="inversion">inversion/</a>: aligned photo, reconstruction, latent.npz, metrics.json.</p>
<pre>{e(json.dumps(metrics, indent=1))}</pre>
</body></html>
"""
    return write_text(out / "index.html", page)
