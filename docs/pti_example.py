"""Draws docs/pti_example.png with the real `stylenerf-edit invert --pti` pipeline on held-out procedural photos.

Each row, one photo (synth seed 4242, not one the model or the benchmarks' training saw): the photo, the W+ fit,
the PTI fit; then for yaw -25 and +25 degrees: the exact procedural render there, the W+ latent and the tuned
generator, so that what tuning does to the other views shows beside the truth.

    python docs/pti_example.py [--n 2] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylenerf_edit.generator import load_with_info
from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.images import labelled_sheet, save_png, to_uint8
from stylenerf_edit.invert.latent import load_latent
from stylenerf_edit.invert.pipeline import InvertOptions, invert_photos
from stylenerf_edit.invert.pti import tuned_for_latent
from stylenerf_edit.invert.settings import InversionConfig, TuningConfig
from stylenerf_edit.metrics import psnr
from stylenerf_edit.synthetic.dataset import synthesize
from stylenerf_edit.synthetic.params import HeadParams
from stylenerf_edit.synthetic.renderer import render_heads

HERE = Path(__file__).resolve().parent
YAWS = (-25.0, 25.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    G, info = load_with_info("bundled:heads")
    R = G.img_resolution
    rows = []
    with tempfile.TemporaryDirectory() as d:
        synthesize(args.n, d, resolution=256, seed=4242)
        photos = sorted(Path(d).glob("*.png"))
        options = InvertOptions(config=InversionConfig(steps=args.steps), aligned=True, pti=TuningConfig())
        outcomes = invert_photos(photos, Path(d) / "out", options=options)
        for photo, outcome in zip(photos, outcomes):
            truth = json.loads(photo.with_suffix(".json").read_text())
            latent = load_latent(outcome.out_dir / "latent.npz", generator=info)
            tuned = tuned_for_latent(G, outcome.out_dir / "latent.npz", latent, info.weights_sha256)
            params = HeadParams(**{k: torch.tensor([v] * len(YAWS)) for k, v in truth["params"].items()})
            world, intr = stack_cameras([Camera(**truth["camera"]).with_(yaw=y) for y in YAWS])
            real = render_heads(params, world, intr, R, torch.tensor([truth["background"]] * len(YAWS)),
                                world=truth.get("world", 1)).image
            ws = torch.from_numpy(latent.ws)[None].expand(len(YAWS), -1, -1)
            bg = torch.from_numpy(latent.bg_code)[None].expand(len(YAWS), -1)
            cams = [latent.camera.with_(yaw=y) for y in YAWS]
            with torch.no_grad():
                plain, pti = G.synthesize(ws, cams, bg).img, tuned.synthesize(ws, cams, bg).img
            tiles = [np.asarray(Image.open(outcome.out_dir / name).convert("RGB"))
                     for name in ("aligned.png", "reconstruction.png", "reconstruction_pti.png")]
            for k in range(len(YAWS)):
                tiles += [to_uint8(real[k:k + 1])[0], to_uint8(plain[k:k + 1])[0], to_uint8(pti[k:k + 1])[0]]
            m = outcome.metrics
            novel = [float(psnr(x, real).mean()) for x in (plain, pti)]
            rows.append((f"fit {m['psnr']:.1f} -> {m['pti_psnr']:.1f} dB\nnovel {novel[0]:.1f} -> {novel[1]:.1f} dB",
                         tiles))
    columns = ["photo", "W+ fit", "PTI fit"] + [f"{name} {y:+g}°" for y in YAWS for name in ("truth", "W+", "PTI")]
    save_png(labelled_sheet(rows, columns, tile=128), HERE / "pti_example.png")


if __name__ == "__main__":
    main()
