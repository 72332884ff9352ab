"""Draws docs/bundled_sample_sheet.png: the bundled model (odd rows) under its procedural ground truth
(even rows) for six held-out latents, yaw -30 ... +30 degrees, and docs/bundled_sweep.gif for one of them.

    python docs/sample_sheet.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stylenerf_edit.images import contact_sheet, pingpong, save_png, to_uint8, write_gif
from stylenerf_edit.editing.views import yaw_sweep
from stylenerf_edit.generator import load_with_info
from stylenerf_edit.generator.camera import stack_cameras
from stylenerf_edit.synthetic.distill import model_world
from stylenerf_edit.synthetic.params import background_from_code, head_params_from_z
from stylenerf_edit.synthetic.renderer import render_heads

HERE = Path(__file__).resolve().parent


def main(seeds: tuple[int, ...] = (1, 2, 3, 4, 5, 6), yaws: int = 7) -> None:
    G, info = load_with_info("bundled:heads")
    world_version = model_world(info.extra.get("source", {}))
    cams = yaw_sweep(yaws, 30.0)
    world, intr = stack_cameras(cams)
    tiles = []
    for seed in seeds:
        g = torch.Generator().manual_seed(10_000 + seed)
        z, code = torch.randn(1, 512, generator=g), G.sample_bg_code(1, g)
        with torch.no_grad():
            fake = G.synthesize(G.mapping(z).expand(yaws, -1, -1), (world, intr), code.expand(yaws, -1)).img
        real = render_heads(head_params_from_z(z.expand(yaws, -1)), world, intr, G.img_resolution,
                            background_from_code(code.expand(yaws, -1)), world=world_version).image
        tiles += list(to_uint8(real)) + list(to_uint8(fake))
    sheet = contact_sheet(tiles, columns=yaws)
    save_png(np.kron(sheet, np.ones((2, 2, 1), dtype=np.uint8)), HERE / "bundled_sample_sheet.png")
    g = torch.Generator().manual_seed(10_000 + seeds[0])
    z, code = torch.randn(1, 512, generator=g), G.sample_bg_code(1, g)
    sweep = yaw_sweep(24, 30.0)
    with torch.no_grad():
        frames = to_uint8(G.synthesize(G.mapping(z).expand(24, -1, -1), sweep, code.expand(24, -1)).img)
    write_gif([np.kron(f, np.ones((2, 2, 1), dtype=np.uint8)) for f in pingpong(list(frames))],
              HERE / "bundled_sweep.gif", fps=20)
    print(HERE / "bundled_sample_sheet.png")


if __name__ == "__main__":
    main()
