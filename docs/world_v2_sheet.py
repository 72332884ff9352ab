"""Draws docs/world_v2_sheet.png: procedural world 2 at 128 px (left three columns, yaw -30, 0, +30) and the
same renders area-downsampled to 64 px (right three columns, shown enlarged), one attribute per row, then
three heads drawn from the generator's latent prior.

    python docs/world_v2_sheet.py [--out docs/world_v2_sheet.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.images import save_png, to_uint8
from stylenerf_edit.synthetic.params import HeadParams, background_from_code, head_params_from_z
from stylenerf_edit.synthetic.renderer import render_heads

HERE = Path(__file__).resolve().parent
YAWS = (-30.0, 0.0, 30.0)
ROWS: tuple[tuple[str, dict[str, float]], ...] = (
    ("neutral", {}),
    ("smile +1", {"smile": 1.0}),
    ("smile -1", {"smile": -1.0}),
    ("age 0", {"age": 0.0}),
    ("age 1", {"age": 1.0}),
    ("glasses", {"glasses": 1.0}),
    ("black hair", {"hair_color": 0.0, "skin_tone": 0.15}),
    ("eyes +1", {"eye_size": 1.0, "hair_color": 1.0, "skin_tone": 0.9}),
)
LABEL_W = 96


def main(out: Path) -> None:
    torch.set_num_threads(1)
    world, intr = stack_cameras([Camera(yaw=y) for y in YAWS])
    n = len(YAWS)
    rows: list[tuple[str, HeadParams, torch.Tensor]] = [
        (name, HeadParams.neutral(n, **over), torch.full((n, 3), 0.62)) for name, over in ROWS]
    g = torch.Generator().manual_seed(2026)
    for k in range(3):
        z, code = torch.randn(1, 512, generator=g), torch.randn(1, 32, generator=g) * 0.65
        rows.append((f"prior #{k + 1}", head_params_from_z(z.expand(n, -1)), background_from_code(code).expand(n, 3)))
    lines = []
    for name, params, bg in rows:
        img = render_heads(params, world, intr, 128, bg, world=2).image
        small = F.interpolate(F.interpolate(img, size=64, mode="area"), size=128, mode="nearest")
        strip = np.concatenate(list(to_uint8(torch.cat([img, small]))), axis=1)
        label = Image.new("RGB", (LABEL_W, 128), (245, 245, 245))
        ImageDraw.Draw(label).text((6, 58), name, fill=(20, 20, 20))
        lines.append(np.concatenate([np.asarray(label), strip], axis=1))
    header = Image.new("RGB", (LABEL_W + 6 * 128, 20), (245, 245, 245))
    draw = ImageDraw.Draw(header)
    for i, yaw in enumerate(YAWS * 2):
        draw.text((LABEL_W + i * 128 + 30, 4), f"{'128' if i < 3 else '64'} px, yaw {yaw:+.0f}", fill=(20, 20, 20))
    save_png(np.concatenate([np.asarray(header)] + lines, axis=0), out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "world_v2_sheet.png")
    main(parser.parse_args().out)
