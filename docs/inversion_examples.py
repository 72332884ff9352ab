"""Draws docs/inversion_real.png and docs/inversion_procedural.png with the real `stylenerf-edit invert` pipeline.

Real photos: scikit-image's astronaut and matplotlib's grace_hopper.jpg (both public domain), detected,
FFHQ-aligned and inverted into the bundled model. Each row: the photo with the alignment quad, the aligned
crop, the reconstruction, the reconstruction pasted back, and the latent at yaw -25 / +25 degrees. The bundled
model only knows cartoon heads, so this shows the pipeline (alignment, pose, optimisation, paste-back), not
photo-real quality: that needs the official FFHQ checkpoints.

Procedural photos: the four shipped demo photos (inputs already aligned). Each row: the photo, the
reconstruction, and the latent at yaw -25 / +25 degrees next to the procedural ground truth there.

    python docs/inversion_examples.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from stylenerf_edit.images import contact_sheet, labelled_sheet, save_png, to_uint8
from stylenerf_edit.generator import load_generator
from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.invert.align import align_photo, paste_back
from stylenerf_edit.invert.latent import load_latent
from stylenerf_edit.invert.optimize import InversionConfig
from stylenerf_edit.invert.pipeline import InvertOptions, invert_photos
from stylenerf_edit.invert.photo import load_photo
from stylenerf_edit.synthetic.dataset import demo_photos
from stylenerf_edit.synthetic.params import HeadParams
from stylenerf_edit.synthetic.renderer import render_heads

HERE = Path(__file__).resolve().parent
TILE = 192


def _tile(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((TILE, TILE), Image.Resampling.LANCZOS))


def _views(G, latent_path: Path, yaws: tuple[float, ...] = (-25.0, 25.0)) -> list[np.ndarray]:
    latent = load_latent(latent_path)
    ws = torch.from_numpy(latent.ws)[None].expand(len(yaws), -1, -1)
    bg = torch.from_numpy(latent.bg_code)[None].expand(len(yaws), -1)
    with torch.no_grad():
        img = G.synthesize(ws, [latent.camera.with_(yaw=y) for y in yaws], bg).img
    return [_tile(x) for x in to_uint8(img)]


def real_photos(G, steps: int, work: Path) -> None:
    from matplotlib import cbook
    from skimage import data

    photos = [work / "astronaut.png", work / "grace_hopper.jpg"]
    Image.fromarray(data.astronaut()).save(photos[0])
    Image.open(cbook.get_sample_data("grace_hopper.jpg")).save(photos[1])
    out = work / "out"
    invert_photos(photos, out, options=InvertOptions(config=InversionConfig(steps=steps), paste_back=True))
    rows = []
    for photo in photos:
        d = out / photo.stem
        original = Image.fromarray(load_photo(photo))
        quad = load_latent(d / "latent.npz").alignment["quad"]
        ImageDraw.Draw(original).polygon([tuple(p) for p in quad], outline=(255, 220, 0), width=4)
        aligned = np.asarray(Image.open(d / "aligned.png").convert("RGB"))
        save_png(aligned, HERE / f"aligned_{photo.stem}.png")
        rows += [_tile(np.asarray(original)), _tile(aligned),
                 _tile(np.asarray(Image.open(d / "reconstruction.png").convert("RGB"))),
                 _tile(np.asarray(Image.open(d / "pasted.png").convert("RGB"))), *_views(G, d / "latent.npz")]
        metrics = json.loads((d / "metrics.json").read_text())
        print(photo.name, {k: metrics[k] for k in ("pose_method", "psnr", "lpips")}, metrics["camera"])
    save_png(contact_sheet(rows, columns=6), HERE / "inversion_real.png")
    paste_back_figure(photos[1], out / photos[1].stem, G.img_resolution)


def paste_back_figure(photo: Path, folder: Path, resolution: int) -> None:
    """docs/paste_back.png: the photo, the reconstruction pasted as the aligned square, and blended through the
    face region (the default), each cropped around the aligned square."""
    original = load_photo(photo)
    face = align_photo(photo, resolution)
    recon = np.asarray(Image.open(folder / "reconstruction.png").convert("RGB"))
    square = paste_back(original, recon, face.alignment)
    blended = paste_back(original, recon, face.alignment, landmarks=face.landmarks)
    assert np.array_equal(blended, load_photo(folder / "pasted.png"))      # what `invert --paste-back` wrote
    (x0, y0), (x1, y1) = face.alignment.quad.min(0) - 40, face.alignment.quad.max(0) + 40
    box = tuple(int(v) for v in (max(x0, 0), max(y0, 0), min(x1, original.shape[1]), min(y1, original.shape[0])))
    crops = [np.asarray(Image.fromarray(im).crop(box).resize((320, 320), Image.Resampling.LANCZOS))
             for im in (original, square, blended)]
    save_png(labelled_sheet([("", crops)], ["photo", "--paste-region square", "face region (default)"]),
             HERE / "paste_back.png")


def procedural_photos(G, steps: int, work: Path) -> None:
    photos = demo_photos()
    out = work / "demo"
    invert_photos(photos, out, options=InvertOptions(config=InversionConfig(steps=steps), aligned=True))
    rows = []
    for photo in photos:
        d = out / photo.stem
        truth = json.loads(photo.with_suffix(".json").read_text())
        params = HeadParams(**{k: torch.tensor([v, v]) for k, v in truth["params"].items()})
        cams = [Camera(**truth["camera"]).with_(yaw=y) for y in (-25.0, 25.0)]
        world, intr = stack_cameras(cams)
        real = render_heads(params, world, intr, 256, torch.tensor([truth["background"]] * 2),
                            world=truth.get("world", 1)).image
        fake = _views(G, d / "latent.npz")
        rows += [_tile(np.asarray(Image.open(photo).convert("RGB"))),
                 _tile(np.asarray(Image.open(d / "reconstruction.png").convert("RGB"))),
                 fake[0], _tile(to_uint8(real)[0]), fake[1], _tile(to_uint8(real)[1])]
    save_png(contact_sheet(rows, columns=6), HERE / "inversion_procedural.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=InversionConfig.steps)
    args = parser.parse_args()
    G = load_generator("bundled:heads")
    with tempfile.TemporaryDirectory() as d:
        real_photos(G, args.steps, Path(d))
        procedural_photos(G, args.steps, Path(d))


if __name__ == "__main__":
    main()
